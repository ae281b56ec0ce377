"""Shared fixtures: a PostgreSQL URL when the machine's server is reachable; a local Spark."""

from __future__ import annotations

import os

import pytest

PG_URL = os.environ.get("CLIENTELA_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_url() -> str:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    try:
        engine = sqlalchemy.create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # server absent or refusing
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}")
    return PG_URL


@pytest.fixture(scope="session")
def spark():
    """A local Spark session (two cores), shared by the Spark tests; skipped where pyspark or
    Java is absent."""
    import shutil

    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install -e .[dev])")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Spark needs Java (17), and there is none on this machine")
    from features.spark import session

    spark = session("local[2]")
    yield spark
    spark.stop()
