"""``manage.py upload_version MODEL LABEL FILE``: register an artifact as a new model version."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from mlplatform.conf import platform_setting
from mlplatform.errors import PlatformError
from predictions import services
from predictions.models import MLModel, ModelVersion

RUNTIME_BY_SUFFIX = {
    ".onnx": ModelVersion.Runtime.ONNX,
    ".npz": ModelVersion.Runtime.NUMPY,
    ".json": ModelVersion.Runtime.ENSEMBLE,
}


class Command(BaseCommand):
    help = (
        "Validate an artifact (.onnx graph, .npz dense network or ensemble .json) against a "
        "model's features and labels and register it as a new version, as the admin's "
        "'Add model version' page does."
    )

    def add_arguments(self, parser):
        parser.add_argument("model", help="Name of an existing model, e.g. digits.")
        parser.add_argument("label", help="The new version's label, e.g. v2.")
        parser.add_argument("path", type=Path, help="The artifact file.")
        parser.add_argument(
            "--runtime",
            choices=ModelVersion.Runtime.values,
            help="Default: from the file name (.onnx, .npz, .json).",
        )
        parser.add_argument(
            "--status",
            choices=ModelVersion.Status.values,
            default=ModelVersion.Status.STAGED,
            help="staged (default: reachable by name only), active or retired.",
        )
        parser.add_argument(
            "--weight",
            type=float,
            default=0.0,
            help="Traffic weight in the model's split (default 0: reachable by name only).",
        )
        parser.add_argument("--description", default="")
        parser.add_argument(
            "--default",
            action="store_true",
            help="Make it the model's default version (needs --status active).",
        )

    def handle(self, *args, model, label, path, runtime, status, weight, description, **options):
        mlmodel = MLModel.objects.filter(name=model).first()
        if mlmodel is None:
            known = ", ".join(MLModel.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"No model {model!r}; models: {known}.")
        runtime = runtime or RUNTIME_BY_SUFFIX.get(path.suffix.lower())
        if runtime is None:
            raise CommandError(f"Cannot tell the runtime of {path.name!r}; pass --runtime.")
        if weight < 0:
            raise CommandError("--weight must be at least 0.")
        if options["default"] and status != ModelVersion.Status.ACTIVE:
            raise CommandError("Only an active version can be the default: add --status active.")
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
        limit = platform_setting("MAX_ARTIFACT_BYTES")
        if size > limit:
            raise CommandError(f"{path.name} is {size} bytes; the limit is {limit}.")
        try:
            with transaction.atomic():
                version = services.model_version_create(
                    model=mlmodel,
                    label=label,
                    artifact=path.read_bytes(),
                    runtime=runtime,
                    artifact_name=path.name,
                    status=status,
                    traffic_weight=weight,
                    description=description,
                )
                if options["default"]:
                    mlmodel.default_version = version
                    services.model_save(model=mlmodel)
        except PlatformError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(
            f"{mlmodel.name}:{version.label} registered ({runtime}, {status}, weight {weight:g}"
            f"{', default' if options['default'] else ''}); checksum {version.checksum}"
        )
