"""The boosted models: churn (calibrated classifier with reason codes) and value (Tweedie).

Both keep the fitted XGBoost booster and predict through it, so a freshly fitted model and one
loaded from its UBJSON file answer through the same code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import xgboost as xgb
from sklearn.isotonic import IsotonicRegression


def _booster_params(n_estimators, learning_rate, max_depth, random_state, n_jobs) -> dict:
    return {
        "n_estimators": n_estimators,
        "learning_rate": learning_rate,
        "max_depth": max_depth,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "min_child_weight": 5,
        "tree_method": "hist",
        "max_bin": 128,
        "random_state": random_state,
        "n_jobs": n_jobs,
    }


def logit_offset(X, names: list[str], feature: str | None) -> np.ndarray | None:
    """The baseline's churn probability on the logit scale, so that the trees learn a correction
    to the BTYD baseline instead of starting from a constant. (Tried for value with a log link:
    multiplicative corrections extrapolated wildly for customers beyond the training range.)"""
    if feature is None:
        return None
    column = np.asarray(X)[:, names.index(feature)].astype("float64")
    p = np.clip(np.nan_to_num(column, nan=0.5), 1e-4, 1 - 1e-4)
    # float32, as XGBoost stores a margin: given float64, `inplace_predict` took 2-4 ms more
    # per call, most of a small request's time, for the same answers.
    return np.log(p / (1 - p)).astype("float32")


def compact_rounds(model: xgb.XGBModel, tolerance: float) -> int:
    """The fewest boosting rounds whose validation loss is within `tolerance` (relative) of the
    best: trees beyond that point buy next to nothing and cost scoring time on every customer."""
    (curve,) = model.evals_result()["validation_0"].values()
    curve = np.asarray(curve[: model.best_iteration + 1])
    return int(np.argmax(curve <= curve.min() + tolerance * abs(curve.min()))) + 1


def matrix(X, nthread: int = -1) -> xgb.DMatrix:
    """X as an XGBoost matrix, built once and read by both models: building it is a large part
    of a one-customer prediction."""
    return xgb.DMatrix(np.asarray(X, dtype="float32"), nthread=nthread)


def top_features(contrib: np.ndarray, names: list[str], top: int) -> pa.ListArray:
    """Per row, the names of the `top` largest positive values, largest first."""
    rows = np.arange(len(contrib))
    best = np.empty((len(contrib), min(top, contrib.shape[1])), dtype="int32")
    positive = np.empty(best.shape, dtype=bool)
    for k in range(best.shape[1]):  # top-k by repeated argmax: sorted, and cheap for small k
        best[:, k] = contrib.argmax(axis=1)
        positive[:, k] = contrib[rows, best[:, k]] > 0
        contrib[rows, best[:, k]] = -np.inf
    offsets = np.concatenate([[0], np.cumsum(positive.sum(axis=1))]).astype("int32")
    labels = pa.DictionaryArray.from_arrays(pa.array(best[positive]), pa.array(names))
    return pa.ListArray.from_arrays(pa.array(offsets), labels.cast(pa.string()))


def _load_booster(path: Path) -> xgb.Booster:
    booster = xgb.Booster()
    booster.load_model(str(path))
    return booster


class ChurnModel:
    """P(no purchase within the churn horizon): XGBoost + isotonic calibration fitted on a later,
    held-out cutoff (which also decides when to stop adding trees); reason codes from XGBoost's
    per-feature contributions."""

    def __init__(
        self,
        n_estimators: int = 300,
        learning_rate: float = 0.1,
        max_depth: int = 5,
        random_state: int = 0,
        n_jobs: int = 2,
        offset_feature: str | None = "btyd_p_churn",
        tolerance: float = 0.005,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.offset_feature = offset_feature
        self.tolerance = tolerance

    def _offset(self, X) -> np.ndarray | None:
        return logit_offset(X, self.feature_names_, self.offset_feature)

    def fit(self, X, y, X_cal, y_cal, feature_names: list[str]) -> ChurnModel:
        params = _booster_params(
            self.n_estimators, self.learning_rate, self.max_depth, self.random_state, self.n_jobs
        )
        if self.offset_feature not in feature_names:
            self.offset_feature = None
        offset = logit_offset(X, list(feature_names), self.offset_feature)
        offset_cal = logit_offset(X_cal, list(feature_names), self.offset_feature)
        clf = xgb.XGBClassifier(
            objective="binary:logistic", eval_metric="logloss", early_stopping_rounds=20, **params
        )
        clf.fit(
            X,
            np.asarray(y, dtype="int8"),
            base_margin=offset,
            eval_set=[(X_cal, np.asarray(y_cal, dtype="int8"))],
            base_margin_eval_set=None if offset_cal is None else [offset_cal],
            verbose=False,
        )
        self.booster_ = clf.get_booster()[: compact_rounds(clf, self.tolerance)]
        self.booster_.feature_names = self.feature_names_ = list(feature_names)
        offset = self._offset(X)
        self.mean_offset_ = float(np.mean(offset)) if offset is not None else 0.0
        raw = self.raw_proba(X_cal)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y_cal)
        self.calibration_ = {
            "x": iso.X_thresholds_.tolist(),
            "y": iso.y_thresholds_.tolist(),
        }
        return self

    def raw_proba(self, X) -> np.ndarray:
        X = np.asarray(X, dtype="float32")
        return self.booster_.inplace_predict(X, base_margin=self._offset(X))

    def predict_proba(self, X) -> np.ndarray:
        """Calibrated churn probability."""
        return self._calibrated(self.raw_proba(X))

    def _calibrated(self, raw: np.ndarray) -> np.ndarray:
        """The isotonic map, applied by interpolation."""
        cal = self.calibration_
        return np.interp(raw, cal["x"], cal["y"])

    def predict_with_reasons(
        self, X, data: xgb.DMatrix, top: int = 3
    ) -> tuple[np.ndarray, pa.ListArray]:
        """Calibrated churn probability and, per customer, the features pushing it up the most
        (largest positive contributions; approximate Saabas attribution, fast enough for batch
        scoring). One pass over the trees gives both, since a customer's contributions sum to
        their margin. `data` is X as an XGBoost matrix; its base margin is set to the baseline
        offset here. Reasons come as an Arrow list array, so millions of rows never become
        Python lists. The offset counts as the contribution of the BTYD feature it came from,
        measured against its training mean. Features the customer has no value for are never
        reasons."""
        X = np.asarray(X, dtype="float32")
        offset = self._offset(X)
        if offset is not None:
            data.set_base_margin(offset)
        contrib = self.booster_.predict(
            data, pred_contribs=True, approx_contribs=True, validate_features=False
        )
        proba = self._calibrated(1 / (1 + np.exp(-contrib.sum(axis=1, dtype="float64"))))
        contrib = contrib[:, :-1]
        if offset is not None:
            contrib[:, self.feature_names_.index(self.offset_feature)] += offset - self.mean_offset_
        # A reason names something known about the customer: an unknown age may raise the
        # risk in the trees, but "age" would tell a marketer nothing (and mislead).
        contrib[np.isnan(X)] = -np.inf
        return proba, top_features(contrib, self.feature_names_, top)

    def importance(self) -> dict[str, float]:
        return self.booster_.get_score(importance_type="total_gain")

    def save(self, directory: Path) -> list[str]:
        self.booster_.save_model(str(directory / "churn.ubj"))
        extra = {"offset_feature": self.offset_feature, "mean_offset": self.mean_offset_}
        (directory / "churn_calibration.json").write_text(
            json.dumps({**self.calibration_, **extra})
        )
        return ["churn.ubj", "churn_calibration.json"]

    @classmethod
    def load(cls, directory: Path) -> ChurnModel:
        model = cls()
        model.booster_ = _load_booster(directory / "churn.ubj")
        model.feature_names_ = list(model.booster_.feature_names)  # read once: a C call each
        data = json.loads((directory / "churn_calibration.json").read_text())
        model.calibration_ = {"x": data["x"], "y": data["y"]}
        model.offset_feature = data["offset_feature"]
        model.mean_offset_ = data["mean_offset"]
        return model


class ValueModel:
    """Spend within the value horizon: XGBoost with a Tweedie loss (a point mass at zero plus a
    skewed positive part) on top of the BTYD baseline's expected value: the log of it is the
    starting margin, so the trees learn a multiplicative correction and customers the trees
    cannot tell apart keep the baseline's smooth ranking. The total is then calibrated on the
    held-out cutoff (`scale_`), so the aggregate follows the latest window's level."""

    def __init__(
        self,
        n_estimators: int = 300,
        learning_rate: float = 0.1,
        max_depth: int = 5,
        tweedie_variance_power: float = 1.3,
        random_state: int = 0,
        n_jobs: int = 2,
        tolerance: float = 0.005,
        offset_feature: str | None = "btyd_expected_value",
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.tweedie_variance_power = tweedie_variance_power
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.tolerance = tolerance
        self.offset_feature = offset_feature

    def _offset(self, X) -> np.ndarray | None:
        """log(baseline value), floored at 1% of the mean training spend (a zero baseline is
        not a certainty of zero spend)."""
        if self.offset_feature is None:
            return None
        column = np.asarray(X)[:, self.feature_names_.index(self.offset_feature)]
        return np.log(np.maximum(np.nan_to_num(column.astype("float64")), self.floor_))

    def fit(self, X, y, X_val, y_val, feature_names: list[str]) -> ValueModel:
        """Fit on (X, y); (X_val, y_val), a later cutoff, decides when to stop adding trees and
        calibrates the total."""
        params = _booster_params(
            self.n_estimators, self.learning_rate, self.max_depth, self.random_state, self.n_jobs
        )
        power = self.tweedie_variance_power
        reg = xgb.XGBRegressor(
            objective="reg:tweedie",
            tweedie_variance_power=power,
            eval_metric=f"tweedie-nloglik@{power}",
            early_stopping_rounds=20,
            **params,
        )
        y = np.clip(np.asarray(y, dtype="float64"), 0, None)  # net refunds: no spend
        y_val = np.clip(np.asarray(y_val, dtype="float64"), 0, None)
        self.feature_names_ = list(feature_names)
        if self.offset_feature not in self.feature_names_:
            self.offset_feature = None
        self.floor_ = float(max(0.01 * y.mean(), 1e-6))
        offset_val = self._offset(X_val)
        reg.fit(
            X,
            y,
            base_margin=self._offset(X),
            eval_set=[(X_val, y_val)],
            base_margin_eval_set=None if offset_val is None else [offset_val],
            verbose=False,
        )
        self.booster_ = reg.get_booster()[: compact_rounds(reg, self.tolerance)]
        self.booster_.feature_names = self.feature_names_
        self.scale_ = 1.0
        self.scale_ = float(y_val.sum() / max(self.predict(X_val).sum(), 1e-9))
        return self

    def predict(self, X) -> np.ndarray:
        """Expected spend."""
        X = np.asarray(X, dtype="float32")
        raw = self.booster_.inplace_predict(X, base_margin=self._offset(X))
        return self.scale_ * np.clip(raw, 0, None)

    def importance(self) -> dict[str, float]:
        return self.booster_.get_score(importance_type="total_gain")

    def save(self, directory: Path) -> list[str]:
        self.booster_.save_model(str(directory / "value.ubj"))
        calibration = {
            "offset_feature": self.offset_feature,
            "floor": self.floor_,
            "scale": self.scale_,
        }
        (directory / "value_calibration.json").write_text(json.dumps(calibration))
        return ["value.ubj", "value_calibration.json"]

    @classmethod
    def load(cls, directory: Path) -> ValueModel:
        model = cls()
        model.booster_ = _load_booster(directory / "value.ubj")
        model.feature_names_ = list(model.booster_.feature_names)
        data = json.loads((directory / "value_calibration.json").read_text())
        model.offset_feature = data["offset_feature"]
        model.floor_, model.scale_ = data["floor"], data["scale"]
        return model
