"""The `clientela` command: a thin front door over features, training and serving."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
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


def _user_errors(func):
    """Bad input ends with a clear message and a non-zero exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from features.schema import DataError

        try:
            return func(*args, **kwargs)
        except (DataError, ValueError, FileNotFoundError, PermissionError) as exc:
            console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None

    return wrapper


def _mapping(mapping_file, time_format, encoding, customer_col, time_col, amount_col):
    from features.schema import ColumnMapping

    return ColumnMapping.from_options(
        mapping_file,
        time_format,
        encoding,
        customer_id=customer_col,
        timestamp=time_col,
        amount=amount_col,
    )


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
) -> None:
    """Point-in-time customer features as of a day."""
    from features.customer import customer_features
    from features.load import load_inputs
    from features.sources import write_table

    cols = _mapping(mapping, time_format, encoding, customer_col, time_col, amount_col)
    with console.status("loading and validating"):
        inputs = load_inputs(transactions, customers, as_of, cols)
    _print_reports(inputs.reports)
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
def demo(
    workdir: Annotated[Path, typer.Option(help="Where demo data and results go")] = Path("demo"),
    customers: Annotated[int, typer.Option("--customers", "-n")] = 20_000,
) -> None:
    """Run the main job end to end on generated data and embedded defaults."""
    data = workdir / "data"
    generate(customers=customers, out=data, seed=7, end="2025-12-31", years=3.0, fmt="parquet")
    features(
        transactions=str(data / "transactions.parquet"),
        out=str(workdir / "features.parquet"),
        customers=str(data / "customers.parquet"),
    )
    console.print(f"[bold green]demo done[/]: data in {data}/, features in {workdir}/")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
