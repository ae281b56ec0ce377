"""One self-contained HTML page for people who would rather look than read: persona cards, value
at risk by persona and lifecycle stage, the score distributions, and the latest monitoring.
Plots are inline SVG and styles inline CSS: the page opens with no network and runs no script."""

from __future__ import annotations

import html
import io
import re

import numpy as np
import pandas as pd

from serving.report import value_at_risk

CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1f2933;
padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #d9e2ec}
.sub{color:#52606d;margin-top:0}
.kpis{display:flex;gap:1rem;flex-wrap:wrap}
.kpi{background:#f0f4f8;border-radius:8px;padding:.8rem 1rem}
.kpi b{display:block;font-size:1.4rem}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:1rem}
.card{border:1px solid #d9e2ec;border-radius:8px;padding:.8rem 1rem;background:#fff}
.card h3{margin:.1rem 0 .5rem;font-size:1.05rem}
.card dl{display:grid;grid-template-columns:1fr auto;margin:0;gap:.15rem .8rem;font-size:.9rem}
.card dd{margin:0;text-align:right;font-variant-numeric:tabular-nums}
.apart{font-size:.85rem;color:#334e68;margin-top:.5rem}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
th,td{padding:.3rem .6rem;border-bottom:1px solid #e4e7eb;text-align:right}
th:first-child,td:first-child{text-align:left}
.alarm{color:#b42318;font-weight:600}.ok{color:#067647;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:1rem}.plots svg{max-width:100%;height:auto}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _money(value: float) -> str:
    return f"{value:,.0f}"


def _svg(fig) -> str:
    """A matplotlib figure as inline SVG (text kept as paths: no fonts to fetch)."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    # The drawing alone: no XML prologue, no <metadata> naming the tool and its licence.
    return re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg") :], flags=re.S)


def _distributions(scores: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "path"
    churn = pd.to_numeric(scores["churn_probability"]).dropna()
    value = pd.to_numeric(scores["predicted_value"]).dropna()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    axes[0].hist(churn, bins=20, range=(0, 1), color="#3e7cb1")
    axes[0].set(title="churn probability", xlabel="probability", ylabel="customers")
    axes[1].hist(np.log10(value.clip(lower=0) + 1), bins=30, color="#5b8c5a")
    axes[1].set(title="predicted value", xlabel="log10(1 + value)", ylabel="customers")
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _risk_chart(table: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "path"
    body = table[table["persona_name"] != "all"]
    pivot = body.pivot_table(
        index="persona_name", columns="lifecycle_stage", values="value_at_risk", aggfunc="sum"
    ).fillna(0.0)
    pivot = pivot.loc[pivot.sum(axis=1).sort_values().index]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(pivot) + 1.2))
    left = np.zeros(len(pivot))
    for stage in pivot.columns:
        ax.barh(pivot.index, pivot[stage], left=left, label=stage)
        left += pivot[stage].to_numpy()
    ax.set(xlabel="value at risk (churn probability x predicted value)")
    ax.legend(title="lifecycle stage", fontsize=8, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _cards(scores: pd.DataFrame, catalog: list[dict]) -> str:
    frame = scores.assign(
        churn_probability=pd.to_numeric(scores["churn_probability"]),
        predicted_value=pd.to_numeric(scores["predicted_value"]),
    )
    frame["at_risk"] = frame["churn_probability"] * frame["predicted_value"]
    now = frame.groupby("persona_id").agg(
        name=("persona_name", "first"),
        customers=("customer_id", "size"),
        churn=("churn_probability", "mean"),
        value=("predicted_value", "sum"),
        at_risk=("at_risk", "sum"),
    )
    profiles = {p["persona_id"]: p for p in catalog}
    total_value = max(float(now["value"].sum()), 1e-9)
    cards = []
    for pid, row in now.sort_values("value", ascending=False).iterrows():
        profile = profiles.get(int(pid), {})
        facts = [
            ("customers", f"{row.customers:,} ({row.customers / len(frame):.0%})"),
            ("predicted value", f"{_money(row.value)} ({row.value / total_value:.0%})"),
            ("churn probability (mean)", f"{row.churn:.0%}"),
            ("value at risk", _money(row.at_risk)),
        ]
        for key, label, fmt in (
            ("revenue_share", "share of past revenue", "{:.0%}"),
            ("median_recency_days", "days since purchase (median)", "{:,.0f}"),
            ("median_frequency", "repeat purchases (median)", "{:,.0f}"),
            ("median_total_spend", "spend so far (median)", "{:,.0f}"),
            ("b2b_share", "business accounts", "{:.0%}"),
        ):
            if profile.get(key) is not None:
                facts.append((label, fmt.format(profile[key])))
        rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
        apart = profile.get("sets_apart")
        note = f'<div class="apart">sets it apart: {_e(apart)}</div>' if apart else ""
        cards.append(f'<div class="card"><h3>{_e(row["name"])}</h3><dl>{rows}</dl>{note}</div>')
    return f'<div class="cards">{"".join(cards)}</div>'


def _risk_table(table: pd.DataFrame) -> str:
    """Value at risk as persona rows by lifecycle-stage columns, largest persona first."""
    body = table[table["persona_name"] != "all"]
    pivot = body.pivot_table(
        index="persona_name", columns="lifecycle_stage", values="value_at_risk", aggfunc="sum"
    ).fillna(0.0)
    pivot["all stages"] = pivot.sum(axis=1)
    pivot = pivot.sort_values("all stages", ascending=False)
    pivot.loc["all personas"] = pivot.sum()
    head = "".join(f"<th>{_e(c)}</th>" for c in ["persona", *pivot.columns])
    rows = "".join(
        f"<tr><td>{_e(name)}</td>" + "".join(f"<td>{_money(v)}</td>" for v in row) + "</tr>"
        for name, row in pivot.iterrows()
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


MONITOR_ROWS = (
    ("churn AUC, active customers", "churn_auc"),
    ("churn AUC, all customers", "churn_all_auc"),
    ("churn Brier, all", "churn_all_brier"),
    ("churn calibration error, all", "churn_all_calibration_error"),
    ("value Gini (normalised)", "value_normalized_gini"),
    ("value total vs actual", "value_aggregate_bias"),
)


def _monitoring(monitoring: dict | None) -> str:
    if not monitoring:
        return (
            "<p>No monitoring run for this model yet: <code>clientela monitor</code> compares "
            "past scores with what happened once their horizon has passed.</p>"
        )
    m, tags = monitoring["metrics"], monitoring["tags"]
    verdict = tags.get("verdict", "?")
    css = "alarm" if verdict == "retrain" else "ok"
    said = "retrain recommended" if verdict == "retrain" else "no threshold crossed"
    parts = [
        f"<p>Run of {_e(tags.get('as_of', '?'))} on the scores of "
        f'{_e(tags.get("scores_as_of", "?"))}: <span class="{css}">{said}</span>.</p>'
    ]
    alarms = monitoring.get("alarms") or []
    if alarms:
        parts.append("<ul>" + "".join(f'<li class="alarm">{_e(a)}</li>' for a in alarms) + "</ul>")
    rows = []
    for label, key in MONITOR_ROWS:
        if key in m:
            fmt = "{:+.1%}" if key.endswith("bias") else "{:.3f}"
            base = m.get(f"baseline_{key}")
            rows.append(
                f"<tr><td>{_e(label)}</td><td>{fmt.format(m[key])}</td>"
                f"<td>{fmt.format(base) if base is not None else '-'}</td></tr>"
            )
    if rows:
        parts.append(
            "<table><tr><th>realised</th><th>model</th><th>BTYD baseline</th></tr>"
            + "".join(rows)
            + "</table>"
        )
    psi = monitoring.get("psi")
    if psi is not None and len(psi):
        cells = "".join(
            f"<tr><td>{_e(k)}</td><td>{v:.3f}</td></tr>" for k, v in psi.head(8).items()
        )
        parts.append(
            "<table><tr><th>drift since training (largest first)</th><th>PSI</th></tr>"
            f"{cells}</table><p class=sub>PSI below 0.1: stable; above 0.25: a large shift.</p>"
        )
    return "".join(parts)


def render(scores: pd.DataFrame, catalog: list[dict], monitoring: dict | None = None) -> str:
    """The page for one scoring run (`clientela score` output), with the model's persona
    catalog and, when there is one, its latest monitoring run (metrics, tags, alarms, PSI)."""
    table = value_at_risk(scores)
    total = table.iloc[-1]
    first = scores.iloc[0]
    as_of, version = _e(first.get("as_of", "?")), _e(first.get("model_version", "?"))
    kpis = [
        ("customers", f"{int(total['customers']):,}"),
        ("expected churners", f"{total['expected_churners']:,.0f}"),
        ("predicted value", _money(total["predicted_value"])),
        ("value at risk", _money(total["value_at_risk"])),
    ]
    kpi_html = "".join(f'<div class="kpi">{_e(k)}<b>{_e(v)}</b></div>' for k, v in kpis)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>clientela: customers as of {as_of}</title><style>{CSS}</style></head>
<body>
<h1>Customers as of {as_of}</h1>
<p class="sub">model {version} · personas, churn risk and predicted value from clientela</p>
<div class="kpis">{kpi_html}</div>
<h2>Personas</h2>
{_cards(scores, catalog)}
<h2>Value at risk by persona and lifecycle stage</h2>
<div class="plots">{_risk_chart(table)}</div>
{_risk_table(table)}
<h2>Score distributions</h2>
<div class="plots">{_distributions(scores)}</div>
<h2>Monitoring</h2>
{_monitoring(monitoring)}
</body></html>
"""
