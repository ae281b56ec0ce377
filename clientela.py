"""The `clientela` command: a thin front door over features, training and serving."""

from __future__ import annotations

import functools
import os
import sys

# Arrow allocates every column read. Its default pool in the Linux wheels (mimalloc) gave
# memory that numpy then read 13x slower (10M amounts doubled in 0.24 s instead of 0.018 s);
# with jemalloc `clientela features` on 10M rows took 6.5 s instead of 7.8, peak 1.3 GB
# instead of 1.7. Arrow reads this when it loads, so before anything imports it; a pool the
# user chose stays.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    help="clientela: customer personas, churn risk and customer value.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

# Options shared by every command that reads data.
Transactions = Annotated[
    str, typer.Option("--transactions", "-t", help="CSV/Parquet path or SQLAlchemy URL#table")
]
Customers = Annotated[
    str | None, typer.Option("--customers", "-c", help="Customer attributes (optional)")
]
AsOf = Annotated[
    str | None, typer.Option("--as-of", help="UTC day YYYY-MM-DD (default: latest transaction)")
]
CustomerCol = Annotated[
    str | None, typer.Option("--customer-col", help="Source column holding customer_id")
]
TimeCol = Annotated[str | None, typer.Option("--time-col", help="Source column holding timestamp")]
AmountCol = Annotated[str | None, typer.Option("--amount-col", help="Source column holding amount")]
MappingFile = Annotated[
    Path | None,
    typer.Option("--mapping", help='JSON/TOML file: {"customer_id": "CustomerID", ...}'),
]
TimeFormat = Annotated[
    str | None, typer.Option("--time-format", help="strftime format of dates, e.g. %Y%m%d")
]
Encoding = Annotated[str, typer.Option("--encoding", help="Text encoding of CSV sources")]
SparkMaster = Annotated[
    str | None,
    typer.Option(
        "--spark",
        help="Run on Apache Spark at this master (e.g. local[2], spark://host:7077); sources "
        "and outputs are then Parquet/CSV paths or spark:db.table",
    ),
]
DropDuplicates = Annotated[
    bool,
    typer.Option(
        "--drop-duplicates",
        help="Drop exact duplicate rows (default: keep them, as repeat purchases, and count them)",
    ),
]


def _user_errors(func):
    """Bad input ends with a clear message and a non-zero exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from features.schema import DataError
        from models.errors import BundleError, RegistryError

        try:
            return func(*args, **kwargs)
        except (
            DataError,
            BundleError,
            RegistryError,
            ValueError,
            FileNotFoundError,
            PermissionError,
        ) as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
        except OSError as exc:  # the machine, not the input: a full disk, a dead device
            where = f" ({exc.filename})" if exc.filename else ""
            console.print(f"[bold red]error:[/] {escape(str(exc.strerror or exc))}{escape(where)}")
            raise typer.Exit(1) from None

    return wrapper


def _load(transactions, customers, as_of, mapping, time_format, encoding, columns, drop_duplicates):
    """Load and validate the sources with the user's column mapping, then show the
    data-quality report: the first step of every command that reads data."""
    from features.load import load_inputs
    from features.schema import ColumnMapping

    cols = ColumnMapping.from_options(
        mapping,
        time_format,
        encoding,
        customer_id=columns[0],
        timestamp=columns[1],
        amount=columns[2],
    )
    with console.status("loading and validating"):
        inputs = load_inputs(transactions, customers, as_of, cols, drop_duplicates=drop_duplicates)
    _print_reports(inputs.reports)
    return inputs


def _spark_features(
    master, transactions, customers, as_of, mapping, time_format, encoding, columns,
    drop_duplicates,
):  # fmt: skip
    """(Spark session, Spark feature table, as_of): validation and features on Spark, by the
    same functions as on one machine, with the quality report shown as on one machine."""
    from features.schema import ColumnMapping, DataError
    from features.sources import is_sql

    for spec in (transactions, customers):
        if spec and is_sql(spec):
            raise DataError(
                f"{spec}: with --spark, sources are Parquet/CSV paths or spark:db.table"
            )
    from features.spark import session, spark_features

    cols = ColumnMapping.from_options(
        mapping, time_format, encoding, customer_id=columns[0], timestamp=columns[1],
        amount=columns[2],
    )  # fmt: skip
    with console.status(f"starting Spark ({master})"):
        spark = session(master)
    with console.status(f"validating and computing features on Spark ({master})"):
        table, day, reports = spark_features(
            spark, transactions, customers, as_of, cols, drop_duplicates=drop_duplicates
        )
    _print_reports(reports)
    return spark, table, day


def _print_reports(reports) -> None:
    for report in reports:
        table = Table(title=f"data quality: {report.source}", title_justify="left")
        table.add_column("rows")
        table.add_column("count", justify="right")
        table.add_column("example", overflow="fold")
        table.add_row("read", f"{report.rows_read:,}", "")
        for reason, n in report.dropped.items():
            table.add_row(f"[red]dropped[/]: {reason}", f"{n:,}", report.examples.get(reason, ""))
        for reason, n in report.noted.items():
            table.add_row(f"[yellow]kept[/]: {reason}", f"{n:,}", report.examples.get(reason, ""))
        table.add_row("[green]kept[/]", f"{report.rows_kept:,}", "")
        console.print(table)


@app.command()
@_user_errors
def generate(
    customers: Annotated[int, typer.Option("--customers", "-n", help="Number of customers")],
    out: Annotated[Path, typer.Option("--out", help="Output directory")],
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data)")] = 7,
    end: Annotated[str, typer.Option(help="Last day of the data")] = "2025-12-31",
    years: Annotated[float, typer.Option(help="Years of history")] = 3.0,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
) -> None:
    """Synthetic customers and transactions with planted personas (+ ground truth)."""
    from features.sources import write_table
    from features.synthetic import generate as make

    if fmt not in ("parquet", "csv"):
        raise ValueError(f"--format must be parquet or csv, got {fmt!r}")
    start = time.perf_counter()
    with console.status(f"generating {customers:,} customers"):
        cust, tx, truth = make(customers, seed=seed, end=end, years=years)
        for name, frame in (("customers", cust), ("transactions", tx), ("truth", truth)):
            write_table(frame, out / f"{name}.{fmt}")
    console.print(
        f"wrote {len(cust):,} customers and {len(tx):,} transactions to {out}/ "
        f"(ground truth in truth.{fmt}) in {time.perf_counter() - start:.1f}s"
    )


@app.command()
@_user_errors
def features(
    transactions: Transactions,
    out: Annotated[str, typer.Option("--out", help="Output .parquet/.csv path or URL#table")],
    customers: Customers = None,
    as_of: AsOf = None,
    customer_col: CustomerCol = None,
    time_col: TimeCol = None,
    amount_col: AmountCol = None,
    mapping: MappingFile = None,
    time_format: TimeFormat = None,
    encoding: Encoding = "utf-8",
    drop_duplicates: DropDuplicates = False,
    spark: SparkMaster = None,
) -> None:
    """Point-in-time customer features as of a day."""
    from features.customer import customer_features
    from features.sources import write_table

    columns = (customer_col, time_col, amount_col)
    if spark:
        from features.spark import write

        session, table, day = _spark_features(
            spark, transactions, customers, as_of, mapping, time_format, encoding, columns,
            drop_duplicates,
        )  # fmt: skip
        with console.status(f"writing features on Spark ({spark})"):
            where = write(table, out)
        console.print(f"features as of {day.date()} on Spark ({spark}) -> {where}")
        return
    inputs = _load(
        transactions,
        customers,
        as_of,
        mapping,
        time_format,
        encoding,
        columns,
        drop_duplicates,
    )
    with console.status("building features"):
        table = customer_features(inputs.transactions, inputs.as_of, inputs.customers)
        where = write_table(table, out)
    stages = table["lifecycle_stage"].value_counts().to_dict()
    console.print(
        f"features for {len(table):,} customers as of {inputs.as_of.date()} -> {where}\n"
        f"lifecycle stages: {stages}"
    )


@app.command()
@_user_errors
def train(
    transactions: Transactions,
    customers: Customers = None,
    as_of: AsOf = None,
    churn_horizon: Annotated[
        int | None,
        typer.Option(help="Days without purchase = churn (default: 90, shorter on short data)"),
    ] = None,
    value_horizon: Annotated[
        int | None,
        typer.Option(help="Days of future spend to predict (default: 365, shorter on short data)"),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML file of training settings (options given here win)"),
    ] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment")] = None,
    model_name: Annotated[str | None, typer.Option(help="Registered model name")] = None,
    personas: Annotated[
        int | None, typer.Option(help="Fix the number of personas (default: chosen in 3-8)")
    ] = None,
    customer_col: CustomerCol = None,
    time_col: TimeCol = None,
    amount_col: AmountCol = None,
    mapping: MappingFile = None,
    time_format: TimeFormat = None,
    encoding: Encoding = "utf-8",
    drop_duplicates: DropDuplicates = False,
) -> None:
    """Train personas, churn and value models; log, register and maybe promote them."""
    from training.config import TrainConfig

    settings = TrainConfig.from_toml(
        config,
        churn_horizon=churn_horizon,
        value_horizon=value_horizon,
        experiment=experiment,
        model_name=model_name,
        n_personas=personas,
    )
    columns = (customer_col, time_col, amount_col)
    inputs = _load(
        transactions,
        customers,
        as_of,
        mapping,
        time_format,
        encoding,
        columns,
        drop_duplicates,
    )
    _train(inputs, settings)


def _train(inputs, settings) -> None:
    """Train on loaded inputs, showing the plan and the stages; log, register, maybe promote."""
    from training.run import STAGES, run_training
    from training.windows import plan_windows

    plan = plan_windows(inputs.transactions, inputs.as_of, settings)
    console.print(
        f"training as of {plan.as_of.date()} on {plan.history_days} days of history: churn "
        f"horizon {plan.churn.horizon} days ({plan.churn.n_cutoffs} training cutoffs), value "
        f"horizon {plan.value.horizon} days ({plan.value.n_cutoffs} training cutoffs)"
    )
    for note in plan.notes:
        console.print(f"[yellow]notice:[/] {note}")
    with _StageProgress([*STAGES, "logging to MLflow and registering"]) as progress:
        outcome = run_training(inputs, settings, progress=progress)
    _print_training(outcome)


class _StageProgress:
    """A rich progress bar over the training stages; each finished stage is printed with its
    elapsed time."""

    def __init__(self, stages):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.bar.add_task("starting", total=len(stages))
        self.current: tuple[str, float] | None = None

    def __enter__(self):
        self.bar.start()
        return self

    def __call__(self, stage: str) -> None:
        self._finish()
        self.current = (stage, time.perf_counter())
        self.bar.update(self.task, description=stage)

    def _finish(self) -> None:
        if self.current is not None:
            name, started = self.current
            self.bar.console.print(
                f"  [green]done[/] {name} ({time.perf_counter() - started:.1f}s)"
            )
            self.bar.advance(self.task)
            self.current = None

    def __exit__(self, kind, *_):
        if kind is None:
            self._finish()
        self.bar.stop()


def _print_training(outcome) -> None:
    m = outcome.result.metrics
    plan = outcome.result.plan
    if outcome.result.sample:
        console.print(f"[yellow]notice:[/] {outcome.result.sample.note}")
    table = Table(
        title=f"out-of-time evaluation: models vs BTYD baseline (churn on "
        f"{int(m['eval_customers_churn']):,} customers active at {plan.churn.evaluation.date()}, "
        f"value on {int(m['eval_customers_value']):,} at {plan.value.evaluation.date()})",
        title_justify="left",
    )
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column("BTYD baseline", justify="right")
    for key, label in (
        ("churn_auc", "churn AUC, active customers"),
        ("churn_all_auc", "churn AUC, all customers"),
        ("churn_pr_auc", "churn PR-AUC"),
        ("churn_brier", "churn Brier (lower is better)"),
        ("churn_calibration_error", "churn calibration error (lower)"),
        ("churn_top_decile_lift", "churn top-decile lift"),
        ("value_normalized_gini", "value normalised Gini"),
        ("value_spearman", "value Spearman"),
        ("value_mae", "value MAE (lower)"),
        ("value_aggregate_bias", "value aggregate bias (0 is best)"),
    ):
        table.add_row(label, f"{m[key]:.3f}", f"{m['baseline_' + key]:.3f}")
    console.print(table)
    catalog = Table(title="personas", title_justify="left")
    for col in ("id", "name", "share", "revenue share", "churn rate", "value at risk"):
        catalog.add_column(col)
    catalog.add_column("what sets it apart", ratio=1)
    for row in outcome.result.bundle.manifest["persona_catalog"]:
        catalog.add_row(
            str(row["persona_id"]),
            row["persona_name"],
            *(
                "-" if row[k] is None else f"{row[k]:.1%}"  # None: too small to show
                for k in ("share", "revenue_share", "churn_rate")
            ),
            "-" if row["value_at_risk"] is None else f"{row['value_at_risk']:,.0f}",
            row["sets_apart"] or "-",
        )
    console.print(catalog)
    console.print(
        f"personas: {m['persona_count']:.0f} from {m['persona_components']:.0f} mixture "
        f"components, certainty {m['persona_certainty']:.1%}, "
        f"stability {m['persona_stability']:.1%}"
    )
    rec = outcome.record
    status = (
        "[bold green]promoted to champion[/]"
        if outcome.promoted
        else "[yellow]left as challenger[/]"
    )
    console.print(
        f"registered {outcome.result.bundle.manifest.get('as_of')} bundle as version "
        f"{rec.version} ({status}): {outcome.reason}\n"
        f"run {rec.run_id} at {outcome.tracking_uri}\n"
        f"open the MLflow UI: [bold]mlflow ui --backend-store-uri {outcome.tracking_uri}[/]",
        soft_wrap=True,
    )


@app.command()
@_user_errors
def promote(
    version: Annotated[str, typer.Option("--version", help="Registered version to promote")],
    model_name: Annotated[str, typer.Option(help="Registered model name")] = "clientela",
) -> None:
    """Make a registered version the champion."""
    from models import registry

    registry.set_champion(model_name, version)
    console.print(f"{model_name} version {version} is now the champion")


@app.command()
@_user_errors
def rollback(
    model_name: Annotated[str, typer.Option(help="Registered model name")] = "clientela",
) -> None:
    """Move the champion alias back to the previous champion."""
    from models import registry

    old, new = registry.rollback(model_name)
    console.print(f"{model_name}: champion moved back from version {old} to version {new}")


ModelUri = Annotated[
    str,
    typer.Option("--model", help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle directory"),
]


@app.command()
@_user_errors
def score(
    out: Annotated[str, typer.Option("--out", help="Predictions: .parquet/.csv path or URL#table")],
    transactions: Annotated[
        str | None, typer.Option("--transactions", "-t", help="CSV/Parquet path or URL#table")
    ] = None,
    features_in: Annotated[
        str | None,
        typer.Option("--features", help="Score a feature snapshot instead of transactions"),
    ] = None,
    customers: Customers = None,
    as_of: AsOf = None,
    model: ModelUri = "models:/clientela@champion",
    snapshot: Annotated[
        str, typer.Option(help="Where the feature snapshot for the API goes (path or URL#table)")
    ] = "clientela_snapshot.parquet",
    customer_col: CustomerCol = None,
    time_col: TimeCol = None,
    amount_col: AmountCol = None,
    mapping: MappingFile = None,
    time_format: TimeFormat = None,
    encoding: Encoding = "utf-8",
    drop_duplicates: DropDuplicates = False,
    spark: SparkMaster = None,
) -> None:
    """Score every customer as of a day and write the feature snapshot the API looks up."""
    from features.sources import read_table
    from models.registry import load_bundle
    from serving.batch import score_features, score_inputs, write_predictions
    from serving.snapshot import write_snapshot

    if (transactions is None) == (features_in is None):
        raise ValueError("give either --transactions or --features")
    if spark and features_in is not None:
        raise ValueError("--spark scores from --transactions (features are computed there)")
    start = time.perf_counter()
    with console.status(f"loading model {model}"):
        bundle = load_bundle(model)
    if spark:
        columns = (customer_col, time_col, amount_col)
        session, feats, day = _spark_features(
            spark, transactions, customers, as_of, mapping, time_format, encoding, columns,
            drop_duplicates,
        )  # fmt: skip
        _spark_score(session, feats, day, bundle, out, snapshot)
        console.print(f"scored on Spark ({spark}) in {time.perf_counter() - start:.1f}s")
        return
    if features_in is not None:
        with console.status("scoring the feature snapshot"):
            feats = read_table(features_in)
            has_day = "as_of" in feats.columns
            day = str(feats["as_of"].iloc[0]) if has_day else bundle.manifest["as_of"]
            predictions = score_features(feats, bundle, day)
    else:
        columns = (customer_col, time_col, amount_col)
        inputs = _load(
            transactions,
            customers,
            as_of,
            mapping,
            time_format,
            encoding,
            columns,
            drop_duplicates,
        )
        with console.status(f"scoring {inputs.transactions['customer_id'].nunique():,} customers"):
            predictions, feats = score_inputs(inputs, bundle)
        with console.status("writing the feature snapshot"):
            where_snapshot = write_snapshot(feats, inputs.as_of, snapshot, predictions, bundle)
        console.print(f"feature snapshot for the API -> {where_snapshot}")
    with console.status("writing predictions"):
        where = write_predictions(predictions, out)
    seconds = time.perf_counter() - start
    bands = predictions["risk_band"].value_counts().to_dict()
    console.print(
        f"scored {len(predictions):,} customers as of {predictions['as_of'].iloc[0]} with model "
        f"{bundle.version} in {seconds:.1f}s -> {where}\nrisk bands: {bands}"
    )


def _spark_score(session, feats, day, bundle, out: str, snapshot: str) -> None:
    import tempfile

    from pyspark.sql import functions as F

    from features.spark import write
    from models.bundle import OUTPUT_COLUMNS
    from serving.snapshot import FINGERPRINT
    from serving.spark import spark_score

    fingerprint = bundle.fingerprint  # of the bundle as loaded, before it is saved for Spark
    feats = feats.persist()
    with tempfile.TemporaryDirectory() as workdir, console.status("scoring on Spark"):
        predictions = spark_score(session, feats, bundle, str(day.date()), Path(workdir)).persist()
        where = write(predictions, out)
        bands = {
            r["risk_band"]: r["count"] for r in predictions.groupBy("risk_band").count().collect()
        }
        answers = [c for c in [*OUTPUT_COLUMNS, "model_version"] if c not in feats.columns]
        with console.status("writing the feature snapshot"):
            table = feats.withColumn("as_of", F.lit(str(day.date()))).join(
                predictions.select("customer_id", *answers), "customer_id"
            )
            where_snapshot = write(table.withColumn(FINGERPRINT, F.lit(fingerprint)), snapshot)
    console.print(f"feature snapshot for the API -> {where_snapshot}")
    console.print(
        f"scored {sum(bands.values()):,} customers as of {day.date()} with model "
        f"{bundle.version} -> {where}\nrisk bands: {bands}"
    )


@app.command()
@_user_errors
def report(
    scores: Annotated[
        str, typer.Option("--scores", "-s", help="Output of `clientela score`: path or URL#table")
    ],
    out: Annotated[
        str | None, typer.Option(help="Also write the table: .csv/.parquet path or URL#table")
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write one self-contained HTML page (personas, value at risk, score "
            "distributions, latest monitoring); `clientela serve` shows it at /report",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model for the persona profiles (default: the version in the scores)"),
    ] = None,
    log_to_mlflow: Annotated[
        bool, typer.Option("--mlflow/--no-mlflow", help="Log the report as an MLflow run")
    ] = True,
    experiment: Annotated[str, typer.Option(help="MLflow experiment")] = "clientela",
) -> None:
    """Value at risk by persona and lifecycle stage for one scoring run: customers, expected
    churners, predicted value and value at risk (churn probability x predicted value)."""
    from features.sources import read_table, write_table
    from serving.report import check_scores, value_at_risk

    table_in = read_table(scores)
    check_scores(table_in, scores)
    table = value_at_risk(table_in)
    first = table_in.iloc[0] if len(table_in) else {}
    as_of = str(first.get("as_of", "?"))
    version = str(first.get("model_version", "?"))
    view = Table(
        title=f"value at risk as of {as_of}, model {version} ({scores}): expected churners, "
        "predicted value and value at risk (churn probability x predicted value)",
        title_justify="left",
    )
    rows = [
        (
            "all customers"
            if row.Index == len(table) - 1
            else f"{row.persona_name}: {row.lifecycle_stage}",
            f"{row.customers:,}",
            f"{row.expected_churners:,.1f}",
            f"{row.predicted_value:,.0f}",
            f"{row.value_at_risk:,.0f}",
            f"{row.share_of_value_at_risk:.1%}",
        )
        for row in table.itertuples()
    ]
    view.add_column("persona: lifecycle stage", ratio=1)
    for i, col in enumerate(("customers", "churners", "value", "at risk", "share"), start=1):
        # Numbers are never cut short: the names wrap instead.
        width = max(len(col), *(len(r[i]) for r in rows))
        view.add_column(col, justify="right", no_wrap=True, min_width=width)
    for i, row in enumerate(rows):
        view.add_row(*row, end_section=i == len(rows) - 2)
    console.print(view)
    if out:
        console.print(f"report -> {write_table(table, out)}")
    if log_to_mlflow:
        from models.registry import log_report

        total = table.iloc[-1]
        run_id = log_report(
            experiment,
            table,
            {"as_of": as_of, "model_version": version},
            {
                "customers": float(total["customers"]),
                "expected_churners": float(total["expected_churners"]),
                "predicted_value": float(total["predicted_value"]),
                "value_at_risk": float(total["value_at_risk"]),
            },
        )
        console.print(f"logged to MLflow: experiment {experiment}, run {run_id}")
    if html:
        _write_html(html, table_in, model or f"models:/{version}", experiment, log_to_mlflow)


def _write_html(path: Path, scores, model: str, experiment: str, with_mlflow: bool) -> None:
    """The report page; the persona profiles come from the model and the monitoring from
    MLflow, each left out with a notice when it cannot be had."""
    from features.schema import DataError
    from models.errors import BundleError, RegistryError
    from serving.html import render

    catalog, monitoring = [], None
    try:
        from models.registry import load_bundle

        with console.status(f"loading persona profiles from {model}"):
            bundle = load_bundle(model)
        catalog = bundle.manifest.get("persona_catalog", [])
    except (BundleError, RegistryError, DataError) as exc:
        console.print(f"[yellow]notice:[/] no persona profiles in the page: {escape(str(exc))}")
    if with_mlflow:
        from models.registry import latest_monitoring

        version = str(scores["model_version"].iloc[0])
        monitoring = latest_monitoring(experiment, version)
    page = render(scores, catalog, monitoring)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    console.print(f"report page -> {path}")


@app.command()
@_user_errors
def audience(
    scores: Annotated[
        str, typer.Option("--scores", "-s", help="Output of `clientela score`: path or URL#table")
    ],
    rules: Annotated[
        str | None,
        typer.Option(help="Audience rules (TOML); default: the examples that ship with clientela"),
    ] = None,
    out: Annotated[
        str,
        typer.Option(
            help="Members: .parquet/.csv path or URL#table; definitions go beside it "
            "(x.definitions.parquet, or URL#table_definitions)"
        ),
    ] = "clientela_audiences.parquet",
) -> None:
    """Named customer lists for marketing systems, built from one scoring run by rules in TOML:
    persona, lifecycle_stage and risk_band (one value or a list); churn_probability,
    value_percentile, predicted_value, expected_purchases and value_at_risk (churn probability x
    predicted value) as { min = .., max = .. }; top = N ranked by `by` (default value_at_risk);
    min_size = N to refuse a list that comes out shorter. Lists and definitions (with the model
    version and as_of) are replaced together, atomically."""
    from features.sources import read_table, write_tables
    from serving.audiences import SCORES, build_audiences, definitions_spec, load_audiences
    from serving.report import check_scores

    definitions = load_audiences(rules)
    table_in = read_table(scores)
    needed = ("customer_id", "persona_id", "persona_name", "lifecycle_stage", "risk_band")
    extra = ("model_version", "as_of")
    check_scores(table_in, scores, (*needed, *[c for c in SCORES if c != "value_at_risk"], *extra))
    members, summary = build_audiences(table_in, definitions, rules or "the bundled rules")
    where = write_tables({out: members, definitions_spec(out): summary})
    first = summary.iloc[0]
    view = Table(
        title=f"audiences from {scores} (as of {first['as_of']}, model {first['model_version']})",
        title_justify="left",
    )
    view.add_column("audience", overflow="fold")
    for col in ("customers", "predicted value", "value at risk"):
        view.add_column(col, justify="right", no_wrap=True)
    view.add_column("description", ratio=1, min_width=24)
    for row in summary.itertuples():
        view.add_row(
            row.audience,
            f"{row.customers:,}",
            f"{row.predicted_value:,.0f}",
            f"{row.value_at_risk:,.0f}",
            row.description,
        )
    console.print(view)
    console.print(f"members -> {where[0]}\ndefinitions -> {where[1]}")


@app.command()
@_user_errors
def monitor(
    scores: Annotated[
        str,
        typer.Option(
            "--scores", "-s", help="Output of a past `clientela score`: path or URL#table"
        ),
    ],
    transactions: Transactions,
    customers: Customers = None,
    as_of: AsOf = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model that made the scores (default: the version named in them)"),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="TOML file: thresholds under [monitor], [train] for --retrain"
        ),
    ] = None,
    retrain: Annotated[
        bool, typer.Option(help="When a retrain is recommended, train (through the usual gate)")
    ] = False,
    log_to_mlflow: Annotated[
        bool, typer.Option("--mlflow/--no-mlflow", help="Log the monitoring run to MLflow")
    ] = True,
    experiment: Annotated[str, typer.Option(help="MLflow experiment")] = "clientela",
    customer_col: CustomerCol = None,
    time_col: TimeCol = None,
    amount_col: AmountCol = None,
    mapping: MappingFile = None,
    time_format: TimeFormat = None,
    encoding: Encoding = "utf-8",
    drop_duplicates: DropDuplicates = False,
) -> None:
    """How past scores did once their horizon passed (churn AUC, calibration, Brier, value vs
    actual, overall and per persona, beside the BTYD baseline) and how far inputs and
    predictions drifted (PSI) since training. Exit code 3 when a retrain is recommended."""
    from features.schema import DataError
    from features.sources import read_table
    from models.registry import load_bundle
    from serving.report import check_scores
    from training.config import MonitorConfig, TrainConfig
    from training.monitor import monitor as run_monitor

    thresholds = MonitorConfig.from_toml(config)
    past = read_table(scores)
    needed = ("customer_id", "persona_name", "churn_probability", "predicted_value")
    check_scores(past, scores, (*needed, "model_version", "as_of"))
    version = str(past["model_version"].iloc[0])
    if model is None and "/" not in version:
        raise DataError(
            f"{scores} was scored by model {version!r} (a bundle directory, not a registered "
            "version): pass that directory with --model"
        )
    uri = model or f"models:/{version}"
    with console.status(f"loading model {uri}"):
        bundle = load_bundle(uri)
    columns = (customer_col, time_col, amount_col)
    inputs = _load(
        transactions, customers, as_of, mapping, time_format, encoding, columns, drop_duplicates
    )
    with console.status("comparing past scores with what happened, and measuring drift"):
        result = run_monitor(past, inputs, bundle, thresholds)
    _print_monitoring(result, bundle)
    if log_to_mlflow:
        from models.registry import log_monitoring

        tables = {}
        if result.by_persona is not None:
            tables["value_by_persona.json"] = result.by_persona
        for name, psi in (("feature", result.feature_psi), ("prediction", result.prediction_psi)):
            if psi is not None:
                tables[f"{name}_psi.json"] = psi.rename("psi").rename_axis("column").reset_index()
        run_id = log_monitoring(
            experiment,
            version,
            {
                "as_of": str(result.as_of.date()),
                "scores_as_of": str(result.scored_as_of.date()),
                "verdict": "retrain" if result.retrain else "ok",
            },
            result.metrics,
            tables,
            thresholds.to_params(),
            result.alarms,
        )
        console.print(f"logged to MLflow: experiment {experiment}, run {run_id}")
    if not result.retrain:
        console.print("[green]no threshold crossed: no retrain needed[/]")
        return
    console.print("[bold red]retrain recommended:[/]")
    for alarm in result.alarms:
        console.print(f"  - {escape(alarm)}")
    if not retrain:
        raise typer.Exit(3)
    _train(inputs, TrainConfig.from_toml(config))


def _print_monitoring(result, bundle) -> None:
    m = result.metrics
    console.print(
        f"model {result.model_version}: scores as of {result.scored_as_of.date()} for "
        f"{result.customers:,} customers, checked as of {result.as_of.date()} (churn horizon "
        f"{bundle.churn_horizon} d, value horizon {bundle.value_horizon} d)"
    )
    trained = bundle.manifest.get("metrics", {})
    rows = [
        ("churn AUC, active customers", "churn_auc"),
        ("churn AUC, all customers", "churn_all_auc"),
        ("churn Brier, all", "churn_all_brier"),
        ("churn calibration error, all", "churn_all_calibration_error"),
        ("churn rate, all", "churn_all_base_rate"),
        ("value Gini (normalised)", "value_normalized_gini"),
        ("value Spearman", "value_spearman"),
        ("value total vs actual", "value_aggregate_bias"),
    ]
    table = Table(title="how the scores did (realised)", title_justify="left")
    for col in ("metric", "model", "BTYD baseline", "at training"):
        table.add_column(col, justify="left" if col == "metric" else "right")

    def fmt(key, value):
        if value is None:
            return "-"
        return f"{value:+.1%}" if key.endswith("bias") else f"{value:.3f}"

    shown = False
    for label, key in rows:
        if key in m:
            shown = True
            table.add_row(
                label,
                fmt(key, m[key]),
                fmt(key, m.get(f"baseline_{key}")),
                fmt(key, trained.get(key)),
            )
    if shown:
        console.print(table)
    if result.by_persona is not None:
        view = Table(title="value by persona: predicted vs actual", title_justify="left")
        for col in ("persona", "customers", "predicted", "BTYD", "actual", "off by"):
            view.add_column(col, justify="left" if col == "persona" else "right")
        for row in result.by_persona.itertuples():
            view.add_row(
                row.persona_name,
                f"{row.customers:,}",
                f"{row.predicted_value:,.0f}",
                f"{row.baseline_value:,.0f}",
                f"{row.actual_value:,.0f}",
                f"{row.bias:+.0%}",
            )
        console.print(view)
    drift_view = Table(
        title="drift since training", caption="PSI below 0.1: stable; above 0.25: a large shift"
    )
    drift_view.add_column("column")
    drift_view.add_column("PSI", justify="right")
    for psi in (
        result.prediction_psi,
        result.feature_psi.head(5) if result.feature_psi is not None else None,
    ):
        if psi is None:
            continue
        for i, (name, value) in enumerate(psi.items()):
            drift_view.add_row(name, f"{value:.3f}", end_section=i == len(psi) - 1)
    console.print(drift_view)
    for note in result.notes:
        console.print(f"[yellow]notice:[/] {escape(note)}")


@app.command()
@_user_errors
def serve(
    model: ModelUri = "models:/clientela@champion",
    port: Annotated[int, typer.Option(help="HTTP port")] = 3000,
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface)")
    ] = "127.0.0.1",
    snapshot: Annotated[str, typer.Option(help="Feature snapshot for lookups by id")] = (
        "clientela_snapshot.parquet"
    ),
    audiences: Annotated[
        str, typer.Option(help="Lists served at /audiences (`clientela audience --out`)")
    ] = "clientela_audiences.parquet",
    report_page: Annotated[
        Path, typer.Option("--report", help="Page served at /report (`clientela report --html`)")
    ] = Path("clientela_report.html"),
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (one per core)")] = 1,
    max_concurrency: Annotated[
        int, typer.Option(min=1, help="Requests in flight per worker; more get a 503")
    ] = 64,
    access_log: Annotated[bool, typer.Option(help="Log every request (costs throughput)")] = False,
    tracing: Annotated[
        bool,
        typer.Option(help="OpenTelemetry spans for inference routes (costs half the throughput)"),
    ] = False,
) -> None:
    """Start the prediction API (BentoML)."""
    import json

    from models.registry import load_bundle

    with console.status(f"checking model {model}"):
        bundle = load_bundle(model)  # a corrupt or missing bundle stops here, clearly
    console.print(f"model {bundle.version} (trained as of {bundle.manifest['as_of']}) is valid")
    # Every worker serves this very version: an alias resolved by each worker as it starts
    # would mix versions across a promotion. Restart to follow the alias.
    served = pinned(model, bundle)
    _check_port(host, port)
    from serving.schemas import Settings

    Settings.from_env()  # a bad CLIENTELA_MAX_CUSTOMERS is one line here, not a worker traceback
    from serving.audiences import definitions_spec

    definitions_spec(audiences)  # a bad URL#table too

    overrides = {
        "workers": workers,
        "logging": {"access": {"enabled": access_log}},
        # BentoML shares the limit among the workers.
        "traffic": {"timeout": 60, "max_concurrency": max_concurrency * workers},
    }
    if tracing:  # the exporter comes from a BentoML config file (BENTOML_CONFIG)
        overrides["tracing"] = {"excluded_urls": ["/readyz", "/livez", "/metrics"]}
    env = {
        **os.environ,
        "CLIENTELA_MODEL": served,
        "CLIENTELA_SNAPSHOT": snapshot,
        "CLIENTELA_AUDIENCES": audiences,
        "CLIENTELA_REPORT": str(report_page.resolve()),
        "BENTOML_CONFIG_OVERRIDES": json.dumps({"services": {"clientela": overrides}}),
        # One OpenMP thread per worker (unless set): XGBoost set up each request's margins with
        # a thread team, 10% of a busy worker's time, next to nothing with one thread.
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    console.print(
        f"serving {served} on http://{host}:{port} with {workers} worker(s) "
        "(docs at /docs, metrics at /metrics)"
    )
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:Clientela"]
    # Replace this process, so that a stop signal reaches BentoML and its workers directly.
    sys.stdout.flush()
    os.execve(sys.executable, [*command, "--host", host, "--port", str(port)], env)


@app.command()
@_user_errors
def build(model: ModelUri = "models:/clientela@champion") -> None:
    """Package the API as a Bento (`bentoml build`) that serves one fixed model version: an
    alias such as @champion is resolved now, so a container never changes model when the
    alias moves. Build again to follow it."""
    import subprocess

    from models.registry import load_bundle

    with console.status(f"checking model {model}"):
        bundle = load_bundle(model)
    served = pinned(model, bundle)
    root = Path(__file__).parent
    bentofile = root / ".bentofile.pinned.yaml"
    bentofile.write_text(pin_bentofile((root / "bentofile.yaml").read_text(), served))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bentoml", "build", "-f", str(bentofile), "-o", "tag"]
            + ["--label", f"model={served.replace('models:/', '').replace('/', '-')}", str(root)],
            capture_output=True,
            text=True,
        )
    finally:
        bentofile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise ValueError(f"bentoml build failed: {(done.stderr or done.stdout).strip()[-500:]}")
    tag = done.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    console.print(f"built Bento {tag}, serving {served} (build again to follow the alias)")


def pin_bentofile(text: str, model: str) -> str:
    """bentofile.yaml with CLIENTELA_MODEL set to `model`."""
    import yaml

    spec = yaml.safe_load(text)
    envs = [e for e in spec.get("envs", []) if e.get("name") != "CLIENTELA_MODEL"]
    spec["envs"] = [*envs, {"name": "CLIENTELA_MODEL", "value": model}]
    return yaml.safe_dump(spec, sort_keys=False)


def pinned(model: str, bundle) -> str:
    """The model to serve as a fixed version: `models:/NAME/N` for a registry alias (resolved
    once, here), the path itself for a bundle directory."""
    if model.startswith("models:/") and "@" in model:
        return f"models:/{bundle.version}"  # the registry version, NAME/N
    return model


def _check_port(host: str, port: int) -> None:
    """One clear line, before anything starts, when the address is taken or not ours."""
    import socket

    from features.schema import DataError

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise DataError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@app.command()
@_user_errors
def demo(
    workdir: Annotated[Path, typer.Option(help="Where demo data and scores go")] = Path("demo"),
    customers: Annotated[int, typer.Option("--customers", "-n")] = 20_000,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Stop after scoring")] = False,
    port: Annotated[int, typer.Option(help="HTTP port of the API")] = 3000,
) -> None:
    """generate -> train -> score -> audiences -> report -> serve, on generated data and
    embedded defaults."""
    data = workdir / "data"
    generate(customers=customers, out=data, seed=7, end="2025-12-31", years=3.0, fmt="parquet")
    tx, cust = str(data / "transactions.parquet"), str(data / "customers.parquet")
    features(transactions=tx, out=str(workdir / "features.parquet"), customers=cust)
    train(transactions=tx, customers=cust)
    scores = str(workdir / "scores.parquet")
    score(out=scores, transactions=tx, customers=cust)
    audience(scores=scores)
    report(scores=scores, html=Path("clientela_report.html"))
    console.print(
        f"[bold green]demo data in {data}/, features and scores in {workdir}/, MLflow runs in "
        "./mlflow.db (mlflow ui --backend-store-uri sqlite:///mlflow.db)[/]"
    )
    example = (
        f"curl -s -X POST http://127.0.0.1:{port}/score/ids "
        "-H 'Content-Type: application/json' "
        '-d \'{"customer_ids": ["0000001", "0000002"]}\''
    )
    if no_serve:
        console.print(
            f"start the API with `clientela serve`, then try:\n  {example}", soft_wrap=True
        )
        return
    console.print(f"starting the API; in another terminal try:\n  {example}", soft_wrap=True)
    serve(port=port)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
