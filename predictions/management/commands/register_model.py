"""``manage.py register_model NAME FILE``: a model (created if needed) and a version in one step."""

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from mlplatform.errors import PlatformError
from predictions.catalogue.registration import model_register
from predictions.catalogue.remote import Upstream, remote_version_register
from predictions.models import MLModel, ModelVersion


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",")]


def _shortened(names: list[str], most: int = 8) -> str:
    if len(names) <= most:
        return ", ".join(names)
    return f"{', '.join(names[: most - 1])}, ..., {names[-1]}"


class Command(BaseCommand):
    help = (
        "Register an artifact (.onnx graph, .npz dense network, or an ensemble .json of existing "
        "versions) as a new version of model NAME, creating the model from the file's signature "
        "if it does not exist. Nothing is stored unless the file fits the model."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="The model's name, e.g. iris (created if needed).")
        parser.add_argument(
            "path", type=Path, nargs="?", help="The artifact file (none for --remote-url)."
        )
        parser.add_argument(
            "--label", help="The new version's label (default: the first free v1, v2, ...)."
        )
        parser.add_argument(
            "--labels",
            type=_names,
            help="Class names in output order, comma-separated (a new classifier whose file "
            "names no classes needs them).",
        )
        parser.add_argument(
            "--features",
            type=_names,
            help="Feature names in input order, comma-separated (default: the file's, or "
            "x0..xN-1).",
        )
        parser.add_argument(
            "--task",
            choices=MLModel.Task.values,
            help="Default: the existing model's, or guessed from the file (classification when "
            "it gives probabilities or --labels are given).",
        )
        parser.add_argument(
            "--runtime",
            choices=ModelVersion.Runtime.values,
            help="Default: from the file name (.onnx, .npz, .json) or its first bytes.",
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
        remote = parser.add_argument_group(
            "remote versions", "A model served by a V2 server (Triton, KServe, MLServer)."
        )
        remote.add_argument("--remote-url", help="The server's base URL, e.g. http://triton:8000.")
        remote.add_argument("--remote-model", help="The model's name on the server.")
        remote.add_argument("--remote-model-version", default="", help="Its version there.")
        remote.add_argument(
            "--remote-timeout", type=float, default=10.0, help="Seconds per request (10)."
        )
        remote.add_argument(
            "--remote-credential-env",
            metavar="VARIABLE",
            help="The environment variable holding the credential (kept off the command line).",
        )
        remote.add_argument(
            "--remote-credential-header",
            default="Authorization",
            help="The header the credential goes in (Authorization: as a Bearer token).",
        )
        remote.add_argument("--remote-output", default="", help="The output that is the answer.")
        parser.add_argument(
            "--default",
            action="store_true",
            help="Make it the model's default version (needs --status active).",
        )

    def handle(self, *args, name, path, **options):
        if options["remote_url"]:
            if path is not None:
                raise CommandError("Give a file or --remote-url, not both.")
            registered = self._remote(name, options)
        elif path is None:
            raise CommandError("Give the artifact file (or --remote-url for a remote version).")
        else:
            registered = self._file(name, path, options)
        self._report(registered, options)

    def _remote(self, name: str, options: dict):
        variable = options["remote_credential_env"]
        credential = ""
        if variable:
            if variable not in os.environ:
                raise CommandError(f"The environment variable {variable} is not set.")
            credential = os.environ[variable]
        try:
            return remote_version_register(
                name=name,
                upstream=Upstream(
                    url=options["remote_url"],
                    model=options["remote_model"] or "",
                    version=options["remote_model_version"],
                    timeout=options["remote_timeout"],
                    credential=credential,
                    credential_header=options["remote_credential_header"],
                    output=options["remote_output"],
                ),
                label=options["label"],
                task=options["task"],
                description=options["description"],
                feature_names=options["features"],
                labels=options["labels"],
                status=options["status"],
                traffic_weight=options["weight"],
                make_default=options["default"],
                create_model=True,
            )
        except PlatformError as exc:
            raise CommandError(exc.detail) from None

    def _file(self, name: str, path: Path, options: dict):
        if not path.is_file():
            raise CommandError(f"Cannot read {path}: no such file.")
        try:
            registered = model_register(
                name=name,
                artifact=path,
                artifact_name=path.name,
                label=options["label"],
                runtime=options["runtime"],
                task=options["task"],
                description=options["description"],
                feature_names=options["features"],
                labels=options["labels"],
                status=options["status"],
                traffic_weight=options["weight"],
                make_default=options["default"],
            )
        except PlatformError as exc:
            raise CommandError(exc.detail) from None
        return registered

    def _report(self, registered, options: dict) -> None:
        model, version = registered.model, registered.version
        if registered.model_created:
            self.stdout.write(
                f"model {model.name} created ({model.task}, {model.n_features} features: "
                f"{_shortened(model.feature_names)}"
                + (f"; labels: {_shortened(model.labels)}" if model.labels else "")
                + ")"
            )
        self.stdout.write(
            f"{model.name}:{version.label} registered ({version.runtime}, {version.status}, "
            f"weight {version.traffic_weight:g}{', default' if options['default'] else ''}); "
            f"checksum {version.checksum}"
        )
