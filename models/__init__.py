"""Estimators (personas, churn, value, BTYD baseline), the model bundle, the registry boundary."""
