"""Tests for writing, reading and validating mlplatform.dense/1 artifacts."""

import contextlib
import hashlib
import io
import pickle
import re
import struct
import zipfile
from contextlib import AbstractContextManager

import numpy as np
import pytest

from predictions.runtime import artifacts
from predictions.runtime.artifacts import FORMAT, checksum, dump_dense, load_dense
from predictions.runtime.errors import ArtifactError


def dump(arrays: dict[str, np.ndarray]) -> bytes:
    return dump_dense(
        [arrays["W0"], arrays["W1"]],
        [arrays["b0"], arrays["b1"]],
        list(arrays["activations"]),
        input_mean=arrays["input_mean"],
        input_scale=arrays["input_scale"],
    )


def raises_exactly(message: str) -> AbstractContextManager:
    return pytest.raises(ArtifactError, match=f"^{re.escape(message)}$")


def test_dump_then_load_gives_back_the_arrays_as_float32(network_arrays):
    network = load_dense(dump(network_arrays))

    assert network.activations == ("relu", "softmax")
    assert (network.n_inputs, network.n_outputs) == (4, 3)
    for i in range(2):
        assert network.weights[i].dtype == np.float32
        np.testing.assert_array_equal(
            network.weights[i], network_arrays[f"W{i}"].astype(np.float32)
        )
        np.testing.assert_array_equal(network.biases[i], network_arrays[f"b{i}"].astype(np.float32))
    np.testing.assert_array_equal(network.input_mean, network_arrays["input_mean"].astype("f4"))
    np.testing.assert_array_equal(network.input_scale, network_arrays["input_scale"].astype("f4"))


def test_dump_without_standardisation_round_trips(network_arrays):
    data = dump_dense(
        [network_arrays["W0"], network_arrays["W1"]],
        [network_arrays["b0"], network_arrays["b1"]],
        ["tanh", "identity"],
    )

    network = load_dense(data)

    assert network.input_mean is None
    assert network.input_scale is None
    assert network.activations == ("tanh", "identity")


def test_dump_gives_identical_bytes_for_identical_arrays(network_arrays):
    first = dump(network_arrays)
    copies = {key: array.copy() for key, array in network_arrays.items()}

    assert dump(copies) == first
    assert checksum(dump(copies)) == checksum(first)


def test_dump_writes_a_npz_with_exactly_the_documented_keys(network_arrays):
    with np.load(io.BytesIO(dump(network_arrays)), allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(network_arrays)
        assert npz["format"].shape == ()
        assert str(npz["format"]) == FORMAT
        assert npz["W1"].dtype == np.float32


def test_a_npz_written_by_numpy_savez_with_float64_and_ints_loads(network_arrays, make_npz):
    network_arrays["b0"] = np.arange(5)

    network = load_dense(make_npz(**network_arrays))

    np.testing.assert_array_equal(network.biases[0], [0, 1, 2, 3, 4])


def test_checksum_is_the_sha256_hex_digest():
    assert checksum(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_if_activation_is_unknown_then_artifact_error_names_it(network_arrays, make_npz):
    network_arrays["activations"] = np.array(["relu", "foo"])

    with raises_exactly(
        "unknown activation 'foo' (choose from relu, tanh, sigmoid, softmax, identity)"
    ):
        load_dense(make_npz(**network_arrays))


def test_if_layer_shapes_do_not_chain_then_artifact_error_gives_both_sizes(
    network_arrays, make_npz
):
    network_arrays["W1"] = np.ones((3, 5))
    network_arrays["b1"] = np.ones(5)

    with raises_exactly("layer 1 weight has shape (3, 5) but the previous layer outputs 5 values"):
        load_dense(make_npz(**network_arrays))


def test_if_bias_length_differs_from_layer_width_then_artifact_error(network_arrays, make_npz):
    network_arrays["b1"] = np.ones(4)

    with raises_exactly("layer 1 bias has shape (4,) but the layer outputs 3 values"):
        load_dense(make_npz(**network_arrays))


def test_if_weight_is_not_2d_then_artifact_error(network_arrays, make_npz):
    network_arrays["W0"] = np.ones(4)

    with pytest.raises(ArtifactError, match=r"^layer 0 weight has shape \(4,\); it must be 2-D"):
        load_dense(make_npz(**network_arrays))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("W0", np.full((4, 5), np.nan), "layer 0 weights contain NaN or infinity"),
        ("b1", np.array([0.0, np.inf, 0.0]), "layer 1 biases contain NaN or infinity"),
        # Finite in float64 but not in float32, which is what the runtime computes in.
        ("W1", np.full((5, 3), 1e39), "layer 1 weights contain NaN or infinity"),
        ("input_mean", np.array([0, 0, np.nan, 0]), "input_mean contains NaN or infinity"),
    ],
)
def test_if_numbers_are_not_finite_then_artifact_error(
    network_arrays, make_npz, key, value, message
):
    network_arrays[key] = value

    with raises_exactly(message):
        load_dense(make_npz(**network_arrays))


def test_if_input_scale_has_a_zero_then_artifact_error_names_its_index(network_arrays, make_npz):
    network_arrays["input_scale"] = np.array([1.0, 0.0, 1.0, 1.0])

    with raises_exactly("input_scale must be non-zero, but input_scale[1] is 0"):
        load_dense(make_npz(**network_arrays))


def test_if_input_mean_has_the_wrong_length_then_artifact_error(network_arrays, make_npz):
    network_arrays["input_mean"] = np.zeros(3)

    with raises_exactly("input_mean has shape (3,) but layer 0 takes 4 inputs"):
        load_dense(make_npz(**network_arrays))


@pytest.mark.parametrize("key", ["format", "activations", "b1", "W0"])
def test_if_a_required_array_is_missing_then_artifact_error_names_it(network_arrays, make_npz, key):
    del network_arrays[key]

    with pytest.raises(ArtifactError, match=f"^missing array '{key}'"):
        load_dense(make_npz(**network_arrays))


@pytest.mark.parametrize("key", ["W2", "notes"])
def test_if_an_unexpected_array_is_present_then_artifact_error_names_it(
    network_arrays, make_npz, key
):
    network_arrays[key] = np.ones((3, 3))

    with pytest.raises(ArtifactError, match=f"^unexpected array '{key}'"):
        load_dense(make_npz(**network_arrays))


def test_if_format_is_different_then_artifact_error_says_which_format_is_read(
    network_arrays, make_npz
):
    network_arrays["format"] = np.array("other/2")

    with raises_exactly(f"unsupported format 'other/2' (this loader reads {FORMAT})"):
        load_dense(make_npz(**network_arrays))


@pytest.mark.parametrize(
    "value", [np.ones((4, 5), dtype=complex), np.full((4, 5), "1"), np.ones((4, 5), dtype=bool)]
)
def test_if_weights_are_not_real_numbers_then_artifact_error(network_arrays, make_npz, value):
    network_arrays["W0"] = value

    with pytest.raises(ArtifactError, match="^array 'W0' has dtype .*; artifacts may only hold"):
        load_dense(make_npz(**network_arrays))


def test_if_an_array_holds_python_objects_then_it_is_refused_without_unpickling(
    network_arrays, make_npz
):
    # np.savez pickles object arrays; loading must refuse them rather than run pickle.
    network_arrays["W0"] = np.array([[Exploding()] * 5] * 4, dtype=object)
    data = make_npz(**network_arrays)

    with raises_exactly("array 'W0' holds Python objects; artifacts may only hold numbers"):
        load_dense(data)


class Exploding:
    """Fails the test if it is ever unpickled."""

    def __reduce__(self):
        return (pytest.fail, ("an artifact was unpickled",))


def test_if_the_file_is_a_single_npy_object_array_then_artifact_error(network_arrays):
    buffer = io.BytesIO()
    np.save(buffer, np.array([network_arrays], dtype=object), allow_pickle=True)

    with pytest.raises(ArtifactError, match=r"^not a \.npz archive: this is a single \.npy"):
        load_dense(buffer.getvalue())


def test_if_the_file_is_a_pickle_then_artifact_error(network_arrays):
    with pytest.raises(ArtifactError, match=r"^not a \.npz archive: this looks like a .*pickle"):
        load_dense(pickle.dumps(network_arrays))


@pytest.mark.parametrize(
    "data",
    [b"", b"hello", np.random.default_rng(0).bytes(2000), b"PK" + bytes(100)],
    ids=["empty", "text", "random", "zip-magic-then-zeros"],
)
def test_if_bytes_are_not_a_zip_then_artifact_error(data):
    with pytest.raises(ArtifactError, match=r"^not a \.npz archive"):
        load_dense(data)


def test_if_a_member_is_not_npy_then_artifact_error(network_arrays, make_npz):
    data = make_npz(**network_arrays)
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            content = b"not numpy" if info.filename == "W1.npy" else source.read(info)
            target.writestr(info, content)

    with raises_exactly("array 'W1' is not a .npy array"):
        load_dense(buffer.getvalue())


def test_if_a_header_claims_a_huge_array_then_it_is_refused_without_allocating_it(
    network_arrays, make_npz
):
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header += b" " * (63 - len(header) % 64) + b"\n"
    forged = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(64)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key, array in network_arrays.items():
            member = io.BytesIO()
            np.save(member, array)
            archive.writestr(f"{key}.npy", forged if key == "W0" else member.getvalue())

    with raises_exactly("array 'W0' should hold 8000000000000 bytes of data but holds 64"):
        load_dense(buffer.getvalue())


def test_if_the_archive_unzips_beyond_the_limit_then_artifact_error(network_arrays, monkeypatch):
    data = dump(network_arrays)
    monkeypatch.setattr(artifacts, "MAX_UNZIPPED_BYTES", 1000)

    with pytest.raises(
        ArtifactError, match=r"^the archive unzips to \d+ bytes; the limit is 1000$"
    ):
        load_dense(data)


def test_artifact_bytes_may_come_as_a_memoryview(network_arrays):
    network = load_dense(memoryview(dump(network_arrays)))

    assert network.n_inputs == 4


def test_if_a_header_claims_more_data_than_present_then_artifact_error(network_arrays):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key, array in network_arrays.items():
            member = io.BytesIO()
            np.save(member, array)
            content = member.getvalue()
            archive.writestr(f"{key}.npy", content[:-8] if key == "b0" else content)

    with raises_exactly("array 'b0' should hold 40 bytes of data but holds 32"):
        load_dense(buffer.getvalue())


def test_if_the_archive_is_truncated_anywhere_then_artifact_error(network_arrays):
    data = dump(network_arrays)

    for end in range(0, len(data), 7):
        with pytest.raises(ArtifactError):
            load_dense(data[:end])


def test_if_any_byte_is_corrupted_then_the_loader_raises_only_artifact_error(network_arrays):
    data = dump(network_arrays)
    rng = np.random.default_rng(1)

    for position in range(len(data)):
        corrupted = bytearray(data)
        corrupted[position] ^= int(rng.integers(1, 256))
        # Anything but ArtifactError escaping fails the test; some flips still give a valid file.
        with contextlib.suppress(ArtifactError):
            load_dense(bytes(corrupted))
