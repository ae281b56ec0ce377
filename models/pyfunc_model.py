"""MLflow models-from-code entry point: MLflow runs this file to build the pyfunc model, so the
bundle travels as JSON/UBJSON files, never as a pickled Python object. Not imported by
clientela itself."""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class ClientelaModel(PythonModel):
    """Feature records in, per-customer predictions out (see `models.bundle.Bundle.score`)."""

    def load_context(self, context):
        from models.bundle import Bundle

        self.bundle = Bundle.load(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from models.bundle import joined_reasons

        return joined_reasons(self.bundle.score(model_input))


mlflow.models.set_model(ClientelaModel())
