"""The errors a user can meet, importable without loading any model library (the CLI names
them on every command)."""


class BundleError(RuntimeError):
    """A bundle that cannot be used: missing, corrupt, or from another format/schema."""


class BundleSchemaError(BundleError):
    """A sound bundle written by a clientela whose bundle schema this one does not read."""


class RegistryError(RuntimeError):
    """MLflow unreachable, a model or alias that does not exist, or a refused promotion."""
