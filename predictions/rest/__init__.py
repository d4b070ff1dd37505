"""The REST face (``/api/v1``): DRF views and serializers, and the lean handlers of its hot path."""
