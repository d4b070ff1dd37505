"""Triton's statistics extension, from the stored predictions every process writes.

Counts and durations come from the ``Prediction`` rows (one per answered row, whatever the face
that answered it), so they add up across processes and hosts and survive restarts. Each row
counts once: a request of N rows adds N. A row's ``processing_time`` runs from the moment its
rows are queued for the model (or the response cache is asked) to the answer. What the rows do
not record is given as zero: failures (refusals are not stored), the split of that time into
queueing and compute, model executions and the batch sizes the micro-batcher formed.
"""

from datetime import datetime

from accounts.models import User
from predictions.catalogue.registry import VersionEntry, registry
from predictions.models import ModelVersion
from predictions.pipeline import model_resolve, version_resolve
from predictions.selectors import predictions_for
from predictions.stats import VersionUsage, usage_by_version


def _duration(count: int, seconds: float) -> dict:
    return {"count": count, "ns": round(seconds * 1e9)}


def _milliseconds(moment: datetime | None) -> int:
    return round(moment.timestamp() * 1000) if moment is not None else 0


def _model_stat(version: VersionEntry, usage: VersionUsage) -> dict:
    return {
        "name": version.model_name,
        "version": version.label,
        "last_inference": _milliseconds(usage.last_at),
        "inference_count": usage.predictions - usage.cached,
        "execution_count": 0,
        "inference_stats": {
            "success": _duration(usage.predictions, usage.seconds),
            "fail": _duration(0, 0.0),
            "queue": _duration(0, 0.0),
            "compute_input": _duration(0, 0.0),
            "compute_infer": _duration(0, 0.0),
            "compute_output": _duration(0, 0.0),
            "cache_hit": _duration(usage.cached, usage.cached_seconds),
            "cache_miss": _duration(0, 0.0),
        },
        "batch_stats": [],
    }


def _versions(name: str | None, version: str | None) -> list[VersionEntry]:
    """The versions asked about: one, a model's, or every model's (retired ones left out)."""
    if name is None:
        models = registry.models()
    else:
        model = model_resolve(name)
        if version:
            return [version_resolve(model, version, principal="")[0]]
        models = [model]
    return [
        entry
        for model in models
        for entry in model.versions.values()
        if entry.status != ModelVersion.Status.RETIRED
    ]


def model_statistics(*, user: User, name: str | None, version: str | None) -> list[dict]:
    """``model_stats`` of the versions asked about, over the predictions the user may read.

    404 (NotFound) for an unknown model, or an unknown or retired version, naming it.
    """
    versions = _versions(name, version)
    usage = usage_by_version(predictions_for(user), [v.id for v in versions])
    return [_model_stat(v, usage.get(v.id, VersionUsage())) for v in versions]
