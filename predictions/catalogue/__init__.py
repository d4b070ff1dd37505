"""The model catalogue: models and versions as registered, their artifacts, and each process's
snapshot of them with the predictors it has loaded."""
