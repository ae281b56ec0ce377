"""The report page: self-contained (nothing fetched, no script), the numbers of the scores,
served at /report, and rendered by a real browser (headless Chromium) when one is installed."""

import re
import shutil
import subprocess

import pandas as pd
import pytest
from typer.testing import CliRunner

from clientela import app
from serving.html import render

SCORES = pd.DataFrame(
    {
        "customer_id": ["a", "b", "c", "d"],
        "persona_id": [0, 0, 1, 0],
        "persona_name": ["regulars", "regulars", "wholesalers", "regulars"],
        "lifecycle_stage": ["regular", "regular", "existing", "lapsed"],
        "churn_probability": [0.1, 0.5, 0.2, 0.9],
        "predicted_value": [100.0, 50.0, 2000.0, 10.0],
        "model_version": "clientela/3",
        "as_of": "2025-12-31",
    }
)
CATALOG = [
    {"persona_id": 1, "persona_name": "wholesalers", "revenue_share": 0.6, "b2b_share": 1.0,
     "sets_apart": "B2B 100% (all 5%) <big>"},
]  # fmt: skip
MONITORING = {
    "metrics": {"churn_auc": 0.712, "baseline_churn_auc": 0.715, "value_aggregate_bias": 0.52},
    "tags": {"verdict": "retrain", "as_of": "2026-03-31", "scores_as_of": "2025-12-31"},
    "alarms": ["churn AUC on active customers is 0.712, down from 0.914"],
    "psi": pd.Series({"recency_days": 0.31, "spend_90d": 0.12}),
}


def test_the_page_holds_the_numbers_and_fetches_nothing():
    page = render(SCORES, CATALOG, MONITORING)
    assert "Customers as of 2025-12-31" in page and "model clientela/3" in page
    assert "444" in page  # value at risk: 0.2 x 2000 + 0.1 x 100 + 0.5 x 50 + 0.9 x 10
    assert "wholesalers" in page and "B2B 100% (all 5%) &lt;big&gt;" in page  # escaped
    assert "retrain recommended" in page and "down from 0.914" in page
    assert "recency_days" in page and "0.310" in page and "+52.0%" in page
    assert "<script" not in page.lower()
    # Nothing to fetch: no src/href/url()/@import; only XML namespace names mention http.
    assert not re.search(r"(src|href)\s*=\s*[\"']?https?:", page)
    assert not re.search(r"url\((?!#)", page) and "@import" not in page  # url(#id): in-page
    assert page.count("<svg") == 2


def test_without_monitoring_the_page_says_how_to_get_it():
    assert "No monitoring run for this model yet" in render(SCORES, [], None)


def test_report_writes_the_page_even_without_the_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    SCORES.to_csv("scores.csv", index=False)
    args = ["report", "-s", "scores.csv", "--html", "page.html", "--no-mlflow"]
    result = CliRunner().invoke(app, [*args, "--model", str(tmp_path / "no-bundle")])
    assert result.exit_code == 0, result.output
    assert "no persona profiles in the page" in result.output
    assert "regulars" in (tmp_path / "page.html").read_text()


def test_the_api_serves_the_page(client, tmp_path, monkeypatch):
    from dataclasses import replace

    from serving.service import info_app

    service = info_app.state.clientela
    page = tmp_path / "report.html"
    monkeypatch.setattr(service, "settings", replace(service.settings, report=str(page)))
    missing = client.get("/report")
    assert missing.status_code == 404 and "clientela report --html" in missing.json()["error"]
    page.write_text(render(SCORES, CATALOG, None))
    response = client.get("/report")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "wholesalers" in response.text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt install chromium)")
def test_a_real_browser_renders_the_page(tmp_path):
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(render(SCORES, CATALOG, MONITORING))
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Uncaught" not in done.stderr and "Failed to load resource" not in done.stderr
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2400)
    # Text, cards and both plots drawn: many colours, and ink well down the page.
    assert len(image.getcolors(maxcolors=1 << 20)) > 50
    lower = image.crop((0, 1200, 1280, 2400)).convert("L")
    assert lower.getextrema()[0] < 100
