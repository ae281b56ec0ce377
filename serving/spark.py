"""Batch scoring on Apache Spark: the bundle travels to the executors as files, is loaded once
per executor process, and each partition of the feature table is scored by `Bundle.score`,
the one prediction path of batch scoring and the API."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from models.bundle import Bundle

SCHEMA = (
    "customer_id string, persona_id bigint, persona_name string, lifecycle_stage string, "
    "churn_probability double, risk_band string, reasons array<string>, "
    "expected_purchases double, predicted_value double, value_percentile bigint, "
    "model_version string, as_of string"
)


@functools.cache
def _bundle(path: str) -> Bundle:
    """One bundle per executor process, whatever the number of partitions it scores."""
    bundle = Bundle.load(path)
    bundle.use_threads(1)  # Spark runs one task per core already
    return bundle


def spark_score(spark, features, bundle: Bundle, as_of: str, workdir: Path):
    """Predictions for a Spark feature table, with the same fields as batch scoring. The bundle
    is written under `workdir` for Spark to ship: keep it until the predictions are written."""
    from pyspark import SparkFiles

    directory = Path(tempfile.mkdtemp(prefix="clientela-bundle-", dir=workdir))
    bundle.save(directory)
    spark.sparkContext.addFile(str(directory), recursive=True)
    version = bundle.version

    def run(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = _bundle(SparkFiles.get(directory.name))
        for part in parts:
            if not len(part):
                continue
            out = model.score(part)
            out["reasons"] = out["reasons"].tolist()  # plain lists for Spark's array<string>
            yield out.assign(model_version=version, as_of=as_of)

    return features.mapInPandas(run, SCHEMA)
