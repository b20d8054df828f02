"""The bootstrap's one-line summary of the exception a script ended with (the run's error)."""

from __future__ import annotations

from airflow_provider_mltrain.runner.bootstrap import summarize


def test_a_plain_exception_is_its_type_and_first_line():
    assert summarize(ValueError("bad data\nmore detail")) == "ValueError: bad data"
    assert summarize(KeyError("x")) == "KeyError: 'x'"
    assert summarize(RuntimeError()) == "RuntimeError"


class Py4JJavaError(Exception):
    """py4j's: its message is the call, then the Java exception, then the JVM stack."""


class PythonException(Exception):
    """pyspark's: a Python worker's traceback inside the message."""


def test_a_py4j_error_carries_the_java_exception():
    exc = Py4JJavaError(
        "An error occurred while calling o42.collect.\n"
        ": org.apache.spark.SparkException: Job aborted due to stage failure: executor lost\n"
        "\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:1)\n"
        "Caused by: java.io.IOException: boom\n"
    )
    assert summarize(exc) == (
        "Py4JJavaError: An error occurred while calling o42.collect. "
        "org.apache.spark.SparkException: Job aborted due to stage failure: executor lost"
    )


def test_a_remote_python_traceback_ends_with_its_exception():
    exc = PythonException(
        "An exception was thrown from the Python worker:\n"
        "Traceback (most recent call last):\n"
        '  File "job.py", line 5, in ratio\n'
        "    return 1 / (x - x)\n"
        "ZeroDivisionError: division by zero\n"
    )
    assert summarize(exc) == (
        "PythonException: An exception was thrown from the Python worker: ZeroDivisionError: division by zero"
    )


def test_the_summary_is_bounded():
    assert len(summarize(ValueError("x" * 10_000))) == 2000
