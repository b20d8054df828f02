"""Compared runs' parameters: arguments read as argparse users write them, differences found."""

from __future__ import annotations

from airflow_provider_mltrain.plugins.parameters import hyperparameters, parameter_rows, parse_arguments


def test_arguments_are_read_as_options_flags_and_positionals():
    assert parse_arguments(
        ["data.csv", "--lr", 0.01, "--epochs=5", "-n", "3", "--fast", "--shift", "-1"]
    ) == {
        "--lr": "0.01",
        "--epochs": "5",
        "-n": "3",
        "--fast": "true",  # a flag: the next word is an option
        "#1": "data.csv",
        "--shift": "-1",
    }
    assert parse_arguments(["a", "--", "--not-an-option"]) == {"#1": "a", "#2": "--not-an-option"}
    assert parse_arguments([]) == {}


def _record(rid, arguments, tags=None, properties=None, env=None):
    return {
        "id": rid,
        "arguments": arguments,
        "tags": tags or {},
        "properties": properties or {},
        "environment": env or {"name": "default"},
    }


def test_rows_say_what_differs_between_runs_in_every_group():
    records = [
        _record(
            "a", ["--lr", "0.1", "--opt", "sgd"], {"owner": "ana"}, {"airflow.dag_id": "d", "depth": "3"}
        ),
        _record("b", ["--lr=0.3", "--opt", "sgd"], {"owner": "bo"}, {"airflow.dag_id": "d", "depth": "5"}),
        _record(
            "c", ["--opt", "adam"], {"owner": "bo"}, {"airflow.dag_id": "d"}, {"name": "gpu", "version": 2}
        ),
    ]
    rows = {(r["group"], r["name"]): r for r in parameter_rows(records)}
    assert rows[("argument", "--lr")]["values"] == {"a": "0.1", "b": "0.3", "c": None}
    assert rows[("argument", "--lr")]["differs"] and rows[("argument", "--opt")]["differs"]
    assert rows[("tag", "owner")]["differs"] and not rows[("property", "airflow.dag_id")]["differs"]
    assert rows[("environment", "name")]["values"] == {"a": "default", "b": "default", "c": "gpu"}
    assert [r["group"] for r in parameter_rows(records)][:2] == ["argument", "argument"]
    axes = {h["name"]: h for h in hyperparameters(parameter_rows(records))}
    assert set(axes) == {"lr", "opt", "depth"}  # provider properties and tags are no hyperparameters
    assert axes["lr"]["numeric"] and axes["lr"]["values"] == {"a": 0.1, "b": 0.3, "c": None}
    assert not axes["opt"]["numeric"] and axes["opt"]["values"]["c"] == "adam"
