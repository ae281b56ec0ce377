"""The model bundle: every model of one training run in non-executable files (JSON, XGBoost
UBJSON) plus a manifest with the sha256 of each file. `Bundle.score` is the one prediction path
for batch scoring, the API and MLflow's pyfunc."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.schema import NUMBER_COLUMNS, DataError
from features.table import Columns
from models.boosted import ChurnModel, ValueModel, matrix
from models.btyd import BTYDBaseline
from models.encoding import BTYD_FEATURES, FeatureEncoder
from models.errors import BundleError, BundleSchemaError
from models.persona import PersonaModel

SCHEMA_VERSION = 3  # 3: latent-class personas
FORMAT = "clientela-bundle"
RISK_BANDS = {"low": 0.3, "medium": 0.6}  # p < 0.3 low, < 0.6 medium, else high
OUTPUT_COLUMNS = [
    "customer_id",
    "persona_id",
    "persona_name",
    "lifecycle_stage",
    "churn_probability",
    "risk_band",
    "reasons",
    "expected_purchases",
    "predicted_value",
    "value_percentile",
]


def joined_reasons(predictions: pd.DataFrame) -> pd.DataFrame:
    """`reasons` as one ';'-separated string per customer, for CSV, SQL and MLflow's pyfunc."""
    joined = pc.binary_join(pa.array(predictions["reasons"]), ";")
    return predictions.assign(reasons=pd.array(joined.to_numpy(zero_copy_only=False), "str"))


def no_reasons(n: int) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, "int32")), pa.array([], pa.string()))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Bundle:
    encoder: FeatureEncoder
    persona: PersonaModel
    churn: ChurnModel
    value: ValueModel
    btyd: BTYDBaseline
    manifest: dict = field(default_factory=dict)
    nthread: int = -1  # XGBoost threads; see `use_threads`

    def use_threads(self, n: int) -> None:
        """XGBoost threads for prediction (-1: all cores). An API worker uses one: OpenMP
        threads that spin-wait between small requests starve its event loop."""
        self.nthread = n
        for booster in (self.churn.booster_, self.value.booster_):
            booster.set_param({"nthread": n})

    @property
    def churn_horizon(self) -> int:
        return int(self.manifest["churn_horizon_days"])

    @property
    def value_horizon(self) -> int:
        return int(self.manifest["value_horizon_days"])

    @property
    def version(self) -> str:
        return str(self.manifest.get("model_version", "local"))

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identifies what the predictions depend on (the manifest names every file by its
        sha256, and holds the horizons and quantiles): equal fingerprints, equal answers,
        whether the bundle came from a directory or the registry."""
        content = {k: v for k, v in self.manifest.items() if k != "model_version"}
        as_written = json.loads(json.dumps(content, default=str))  # as `save` writes it
        text = json.dumps(as_written, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @functools.cached_property
    def feature_columns(self) -> list[str]:
        """The feature-table columns this bundle reads (the BTYD outputs it adds itself)."""
        columns = ["customer_id", *self.persona.input_columns_, *self.encoder.input_columns_]
        return [c for c in dict.fromkeys(columns) if c not in BTYD_FEATURES]

    def check_columns(self, features: pd.DataFrame | Columns) -> None:
        """Refuse a feature table that lacks a column this model reads, or holds text where a
        number belongs: filling them in would move every prediction without a word. (The API
        builds its columns from a typed schema: only their names need checking.)"""
        names = features.names if isinstance(features, Columns) else set(features.columns)
        missing = [c for c in self.feature_columns if c not in names]
        if missing:
            raise DataError(
                f"the feature table lacks {len(missing)} column(s) model {self.version} reads: "
                f"{', '.join(missing)} (write it with `clientela features` and the same inputs "
                "as training: transactions, and customers if training had them)"
            )
        if isinstance(features, Columns):
            return
        dtypes = features.dtypes
        wrong = [
            f"{c} ({dtypes[c]})"
            for c in self.feature_columns
            if c in NUMBER_COLUMNS and dtypes[c].kind not in "biuf" and features[c].notna().any()
        ]
        if wrong:
            raise DataError(f"feature column(s) that must be numbers hold text: {', '.join(wrong)}")

    def model_inputs(self, features: pd.DataFrame | Columns) -> Columns:
        """Features plus the BTYD baseline's outputs, which the boosted models also use."""
        features = Columns.of(features)
        btyd = self.btyd.outputs(features, self.churn_horizon, self.value_horizon)
        return features.with_columns(btyd)

    def predict(
        self, features: pd.DataFrame | Columns, with_reasons: bool = True
    ) -> dict[str, np.ndarray | pa.Array]:
        """Per-customer predictions for a feature table as columns (the names of
        `OUTPUT_COLUMNS`): no per-row objects, so the API builds its records straight from
        them. The API's few customers come as `Columns`, read without pandas."""
        self.check_columns(features)
        inputs = self.model_inputs(features)
        X = self.encoder.transform(inputs)
        value = self.value.predict(X)
        if with_reasons:
            churn, reasons = self.churn.predict_with_reasons(X, matrix(X, self.nthread))
        else:
            churn, reasons = self.churn.predict_proba(X), None
        persona = self.persona.predict(inputs)
        quantiles = np.asarray(self.manifest["value_quantiles"], dtype="float64")
        percentile = np.searchsorted(quantiles, value, side="right") - 1
        band = np.select(
            [churn < RISK_BANDS["low"], churn < RISK_BANDS["medium"]], ["low", "medium"], "high"
        )
        return {
            "customer_id": inputs.text("customer_id"),
            "persona_id": persona.astype("int64"),
            "persona_name": self.persona.name_of(persona),
            "lifecycle_stage": inputs.text("lifecycle_stage"),
            "churn_probability": churn.astype("float64"),
            "risk_band": band.astype(object),
            "reasons": no_reasons(len(X)) if reasons is None else reasons,
            "expected_purchases": inputs.number("btyd_expected_purchases"),
            "predicted_value": value.astype("float64"),
            "value_percentile": np.clip(percentile, 0, 100).astype("int64"),
        }

    def score(self, features: pd.DataFrame, with_reasons: bool = True) -> pd.DataFrame:
        """Per-customer predictions for a feature table (see `features.customer`)."""
        columns = self.predict(features, with_reasons)
        reasons = pd.arrays.ArrowExtensionArray(columns.pop("reasons"))
        out = pd.DataFrame(columns)
        out.insert(OUTPUT_COLUMNS.index("reasons"), "reasons", reasons)
        for col in ("customer_id", "persona_name", "lifecycle_stage", "risk_band"):
            out[col] = out[col].astype("str")
        out["model_version"] = self.version
        return out

    def example_input(self) -> pd.DataFrame:
        """Feature rows of two made-up customers (nobody's data), for MLflow's input example
        and the API's documentation: a regular and a lapsed buyer, with every column this model
        reads, computed by the one feature function."""
        from features.customer import customer_features

        as_of = pd.Timestamp(self.manifest["as_of"], tz="UTC")
        regular = [400, 300, 200, 120, 60, 30, 5]
        lapsed = [500, 420]
        days = regular + lapsed
        tx = pd.DataFrame(
            {
                "customer_id": ["example-regular"] * len(regular)
                + ["example-lapsed"] * len(lapsed),
                "timestamp": [as_of - pd.Timedelta(days=d, hours=-12) for d in days],
                "amount": [80.0, 95.5, 60.0, 120.0, 75.25, 88.0, 64.0, 35.0, 20.0],
                "category": "example",
                "channel": "web",
            }
        )
        attributes = {"customer_id": ["example-regular", "example-lapsed"]}
        for column, value in (("age", 41.0), ("income", 52_000.0)):
            attributes[column] = [value, value]
        attributes["signup_date"] = [as_of - pd.Timedelta(days=d) for d in (400, 500)]
        for column, levels in self.encoder.categories_.items():
            if column != "lifecycle_stage":
                attributes[column] = [levels[0] if levels else None] * 2
        feats = customer_features(tx, as_of, pd.DataFrame(attributes))
        return feats[self.feature_columns]

    def save(self, directory: Path | str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = self.churn.save(directory) + self.value.save(directory)
        for name, payload in (
            ("encoder.json", self.encoder.to_dict()),
            ("persona.json", self.persona.to_dict()),
            ("btyd.json", self.btyd.to_dict()),
        ):
            (directory / name).write_text(json.dumps(payload, indent=1))
            files.append(name)
        manifest = {
            **self.manifest,
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "features": self.encoder.input_columns_,
            "files": {name: sha256(directory / name) for name in sorted(files)},
        }
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
        self.manifest = manifest
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> Bundle:
        """Load and verify: manifest format and schema version, then every file's sha256."""
        directory = Path(directory)
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            raise BundleError(f"{directory} is not a clientela bundle: no manifest.json")
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as exc:
            raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from None
        if manifest.get("format") != FORMAT:
            raise BundleError(f"{directory} is not a clientela bundle (format is missing)")
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise BundleSchemaError(
                f"{directory} has bundle schema version {manifest.get('schema_version')}, "
                f"this clientela reads version {SCHEMA_VERSION}"
            )
        if not isinstance(manifest.get("files"), dict) or not manifest["files"]:
            raise BundleError(f"{manifest_path} lists no files with their sha256: refused")
        for name, expected in manifest["files"].items():
            path = directory / name
            if not path.is_file():
                raise BundleError(f"bundle {directory} is missing {name}")
            if sha256(path) != expected:
                raise BundleError(f"bundle {directory} is corrupt: sha256 of {name} does not match")
        try:
            return cls(
                encoder=FeatureEncoder.from_dict(
                    json.loads((directory / "encoder.json").read_text())
                ),
                persona=PersonaModel.from_dict(
                    json.loads((directory / "persona.json").read_text())
                ),
                churn=ChurnModel.load(directory),
                value=ValueModel.load(directory),
                btyd=BTYDBaseline.from_dict(json.loads((directory / "btyd.json").read_text())),
                manifest=manifest,
            )
        except (KeyError, ValueError, OSError) as exc:
            raise BundleError(f"bundle {directory} cannot be read: {exc}") from None
