"""Training jobs: rolling cutoffs, fitting, out-of-time evaluation, MLflow logging and promotion."""
