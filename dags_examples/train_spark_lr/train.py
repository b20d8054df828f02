"""Train a logistic regression with Spark MLlib on a CSV of features and a 0/1 label; log accuracy.

Runs as the driver of a Spark application (framework "pyspark"): reading, assembling and fitting
happen on the executors, metrics are logged from here with ``mltrain.Run``.
"""

from __future__ import annotations

import argparse

from mltrain import Run
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import SparkSession


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="CSV with a header: feature columns and 'label'")
    parser.add_argument("--reg", type=float, default=0.01)
    parser.add_argument("--max-iter", type=int, default=50)
    args = parser.parse_args()

    run = Run.get_context()
    spark = SparkSession.builder.appName("mltrain-spark-lr").getOrCreate()
    data = spark.read.csv(args.data, header=True, inferSchema=True)
    features = [c for c in data.columns if c != "label"]
    assembled = VectorAssembler(inputCols=features, outputCol="features").transform(data)
    train, test = assembled.randomSplit([0.8, 0.2], seed=7)
    model = LogisticRegression(regParam=args.reg, maxIter=args.max_iter).fit(train)
    for step, loss in enumerate(model.summary.objectiveHistory):
        run.log("loss", float(loss), step=step)
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(model.transform(test))
    run.log("accuracy", accuracy)
    run.log("train_rows", train.count())
    run.set_tags({"spark_app": spark.sparkContext.applicationId})
    print(f"accuracy {accuracy:.4f} on {test.count()} held-out rows")
    model.write().overwrite().save("outputs/model")
    spark.stop()


if __name__ == "__main__":
    main()
