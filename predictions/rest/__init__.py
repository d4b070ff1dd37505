"""The REST face (``/api/v1``): DRF views and routes, and the lean handlers of its hot path."""
