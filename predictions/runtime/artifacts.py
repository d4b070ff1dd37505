"""The `mlplatform.dense/1` artifact format: writing, reading and validating `.npz` files.

Format
------
An artifact is a `.npz` file: a zip archive of `.npy` arrays, as written by `numpy.savez`.
It describes a dense feed-forward network with `n >= 1` layers and holds exactly these arrays:

- `format`: 0-d unicode array, the string `"mlplatform.dense/1"`.
- `activations`: 1-d unicode array of length `n`, one name per layer, each one of `relu`,
  `tanh`, `sigmoid`, `softmax` or `identity`.
- `W0` .. `W{n-1}`: 2-d weights of shape `(in, out)`. `W0` has one row per input feature;
  every later `W{i}` has as many rows as `W{i-1}` has columns. Both sizes are at least 1.
- `b0` .. `b{n-1}`: 1-d biases of shape `(out,)`, as long as their layer's weight is wide.
- `input_mean` (optional): shape `(n_inputs,)`, subtracted from the features before layer 0.
- `input_scale` (optional): shape `(n_inputs,)`, every value non-zero; the features are divided
  by it (after subtracting `input_mean`, when both are present) before layer 0.

No other arrays are allowed, and each is stored as `<key>.npy`.

For a row of features `x` the network computes:

    h = (x - input_mean) / input_scale        # each step skipped when its array is absent
    h = activation_i(h @ W{i} + b{i})         # for i = 0 .. n-1; the last h is the output

`softmax` normalises across the outputs of a row; the other activations act per value.
A classifier ends with `softmax` (one output per class, in label order); a regressor
usually ends with `identity`.

Numbers may be stored as any real integer or floating-point dtype and must all be finite;
they are converted to float32, which is also what `dump_dense` writes and what the runtime
keeps its values in (its sums are float64: `dense.py`). Arrays of Python objects are refused
without being unpickled, and so are archives with missing or extra keys. Any `.npz` with these
keys works, for example:

    np.savez("model.npz", format=np.array("mlplatform.dense/1"),
             activations=np.array(["relu", "softmax"]),
             W0=w0, b0=b0, W1=w1, b1=b1, input_mean=mean, input_scale=std)

Reading does not use `np.load`: it opens the zip itself and parses each `.npy` header with
`numpy.lib.format`, so it can refuse object arrays (never unpickling anything) and check the
size a header claims against the data actually present before allocating memory for it.
"""

import hashlib
import io
import math
import re
import zipfile
from collections.abc import Sequence

import numpy as np

from predictions.runtime.dense import DenseNetwork
from predictions.runtime.errors import ArtifactError
from predictions.runtime.sources import Source, is_path, source_head, source_size

FORMAT = "mlplatform.dense/1"
# Unzipped size limit for all arrays together: ample for networks this runtime should serve,
# and it stops a zip bomb from making the loader inflate gigabytes.
MAX_UNZIPPED_BYTES = 256 * 1024 * 1024
# A fixed timestamp makes the bytes depend only on the arrays (zip entries record a date).
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_LAYER_KEY = re.compile(r"([Wb])(0|[1-9][0-9]*)")
_OPTIONAL_KEYS = ("input_mean", "input_scale")


def checksum(data: bytes) -> str:
    """Return the SHA-256 hex digest of an artifact's bytes."""
    return hashlib.sha256(data).hexdigest()


def dump_dense(
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    activations: Sequence[str],
    *,
    input_mean: np.ndarray | None = None,
    input_scale: np.ndarray | None = None,
) -> bytes:
    """Validate a network and return it as artifact bytes, identical for identical arrays."""
    network = DenseNetwork(
        weights, biases, activations, input_mean=input_mean, input_scale=input_scale
    )
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "activations": np.array(network.activations),
    }
    for i, (weight, bias) in enumerate(zip(network.weights, network.biases, strict=True)):
        arrays[f"W{i}"] = weight
        arrays[f"b{i}"] = bias
    if network.input_mean is not None:
        arrays["input_mean"] = network.input_mean
    if network.input_scale is not None:
        arrays["input_scale"] = network.input_scale
    buffer = io.BytesIO()
    # Stored rather than deflated: float weights barely compress, and loading stays a copy.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            with archive.open(info, "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return buffer.getvalue()


def load_dense(source: Source) -> DenseNetwork:
    """Parse and validate an artifact (bytes or a file); ArtifactError says what is wrong."""
    if not source_size(source):
        raise ArtifactError("not a .npz archive: the artifact is empty")
    head = source_head(source, 6)
    if not head.startswith(b"PK"):
        raise ArtifactError(f"not a .npz archive{_guess_kind(head)}")
    try:
        archive = zipfile.ZipFile(source if is_path(source) else io.BytesIO(source))
    except Exception as exc:  # zipfile raises several types for damaged data
        raise ArtifactError(f"not a .npz archive: the zip data is damaged ({exc})") from exc
    with archive:
        unzipped = sum(info.file_size for info in archive.infolist())
        if unzipped > MAX_UNZIPPED_BYTES:
            raise ArtifactError(
                f"the archive unzips to {unzipped} bytes; the limit is {MAX_UNZIPPED_BYTES}"
            )
        members = _members_by_key(archive)
        fmt = _read(archive, members, "format")
        if fmt.dtype.kind != "U" or fmt.shape != () or fmt.item() != FORMAT:
            raise ArtifactError(f"unsupported format {_show(fmt)} (this loader reads {FORMAT})")
        activations = _read(archive, members, "activations")
        if activations.dtype.kind != "U" or activations.ndim != 1 or activations.size == 0:
            raise ArtifactError(
                "array 'activations' must be a 1-D array of names with one per layer, "
                f"got dtype {activations.dtype} and shape {activations.shape}"
            )
        n_layers = activations.size
        _check_keys(members, n_layers)

        def numbers(key: str) -> np.ndarray:
            array = _read(archive, members, key)
            if array.dtype.kind not in "fiu":
                raise ArtifactError(
                    f"array {key!r} has dtype {array.dtype}; artifacts may only hold real numbers"
                )
            return array

        weights = [numbers(f"W{i}") for i in range(n_layers)]
        biases = [numbers(f"b{i}") for i in range(n_layers)]
        optional = {key: numbers(key) for key in _OPTIONAL_KEYS if key in members}
    return DenseNetwork(weights, biases, activations.tolist(), **optional)


def _guess_kind(head: bytes) -> str:
    if head.startswith(b"\x93NUMPY"):
        return ": this is a single .npy array; save the arrays together with np.savez"
    if head[:1] == b"\x80":
        return ": this looks like a Python pickle, which is never loaded"
    return ""


def _members_by_key(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        key, suffix = info.filename[:-4], info.filename[-4:]
        if suffix != ".npy" or not key or "/" in key:
            raise ArtifactError(f"unexpected file {info.filename!r} in the archive")
        if key in members:
            raise ArtifactError(f"array {key!r} appears twice in the archive")
        members[key] = info
    return members


def _check_keys(members: dict[str, zipfile.ZipInfo], n_layers: int) -> None:
    expected = {"format", "activations", *_OPTIONAL_KEYS}
    for i in range(n_layers):
        expected |= {f"W{i}", f"b{i}"}
        for key in (f"W{i}", f"b{i}"):
            if key not in members:
                raise ArtifactError(
                    f"missing array {key!r} ('activations' lists {n_layers} layers)"
                )
    for key in members:
        if key not in expected:
            if _LAYER_KEY.fullmatch(key):
                detail = f"'activations' lists {n_layers} layers"
            else:
                detail = "expected format, activations, W0.., b0.., input_mean, input_scale"
            raise ArtifactError(f"unexpected array {key!r} ({detail})")


def _read(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], key: str) -> np.ndarray:
    """Read one array without unpickling anything and without trusting its header's size."""
    info = members.get(key)
    if info is None:
        raise ArtifactError(f"missing array {key!r}")
    try:
        with archive.open(info) as member:
            try:
                version = np.lib.format.read_magic(member)
            except ValueError:
                raise ArtifactError(f"array {key!r} is not a .npy array") from None
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ArtifactError(
                    f"array {key!r} uses .npy version {version[0]}.{version[1]}; "
                    "expected 1.0 or 2.0"
                )
            if dtype.hasobject:
                raise ArtifactError(
                    f"array {key!r} holds Python objects; artifacts may only hold numbers"
                )
            if any(n < 0 for n in shape):
                raise ArtifactError(f"array {key!r} has an invalid shape {shape}")
            size = math.prod(shape) * dtype.itemsize
            # The zip member stops at its recorded size, so a forged shape cannot make this
            # read, or the array built from it, any larger than the data really present.
            raw = member.read(size + 1)
            if len(raw) != size:
                raise ArtifactError(
                    f"array {key!r} should hold {size} bytes of data but holds {len(raw)}"
                )
            order = "F" if fortran_order else "C"
            return np.frombuffer(raw, dtype=dtype).reshape(shape, order=order)
    except ArtifactError:
        raise
    except Exception as exc:  # zipfile and numpy's header parser raise many types
        raise ArtifactError(f"array {key!r} cannot be read: {exc}") from exc


def _show(array: np.ndarray) -> str:
    if array.dtype.kind == "U" and array.shape == ():
        return repr(array.item())
    return f"of dtype {array.dtype} and shape {array.shape}"
