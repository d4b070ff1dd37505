"""Load benchmarks of the prediction API."""
