"""The API's own failures, importable without loading the models (see serving.service)."""

from __future__ import annotations

from features.schema import DataError


class DatabaseUnavailable(RuntimeError):
    """A database behind the API cannot be reached now (the API answers 503 and retries)."""


class AudiencesMissing(DataError):
    """No audiences have been built where the API looks for them."""
