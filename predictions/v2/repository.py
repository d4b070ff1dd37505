"""The platform's models as the V2 repository views see them: readiness, the index, the list.

The registry is the repository: every version of every model, in the state its status gives
it. Active and staged versions are served (staged ones to requests that name them), so they
are ``READY`` when their artifact loads in this process; retired versions are ``UNAVAILABLE``.
Versions are loaded (once per process) to be judged, as the server's readiness does.
"""

from mlplatform.errors import NotFound
from predictions.catalogue.registry import ModelEntry, VersionEntry, registry
from predictions.models import ModelVersion
from predictions.pipeline import model_resolve, version_resolve
from predictions.v2.services import version_problem

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"


def _unversioned(model: ModelEntry) -> list[VersionEntry]:
    """Every version a request that names none may reach: the split's, else the default."""
    split = [version for version, _ in model.split]
    if split:
        return split
    fallback = model.default or model.latest
    return [fallback] if fallback is not None else []


def model_ready(name: str, version: str | None) -> bool:
    """Whether the version (or, without one, every version the model's split may choose) loads.

    An unknown model or version, a retired version and a model with nothing to serve are all
    simply not ready: a probe learns nothing else.
    """
    try:
        model = model_resolve(name)
        if version:
            versions = [version_resolve(model, version, principal="")[0]]
        else:
            versions = _unversioned(model)
    except NotFound:
        return False
    return bool(versions) and all(version_problem(v) is None for v in versions)


def _entry(version: VersionEntry) -> dict:
    if version.status == ModelVersion.Status.RETIRED:
        state, reason = UNAVAILABLE, "retired"
    else:
        problem = version_problem(version)
        state, reason = (READY, "") if problem is None else (UNAVAILABLE, problem)
    return {"name": version.model_name, "version": version.label, "state": state, "reason": reason}


def repository_index(*, ready_only: bool = False) -> list[dict]:
    """Triton's repository index: one entry per version (per model when it has none)."""
    entries = []
    for model in registry.models():
        if not model.versions:
            entries.append({"name": model.name, "state": UNAVAILABLE, "reason": "no versions"})
        entries.extend(_entry(version) for version in model.versions.values())
    if ready_only:
        entries = [entry for entry in entries if entry["state"] == READY]
    return entries


def served_model_names() -> list[str]:
    """The models with a version that is not retired, by name (KServe's model list)."""
    return [
        model.name
        for model in registry.models()
        if any(v.status != ModelVersion.Status.RETIRED for v in model.versions.values())
    ]
