"""A large artifact's upload in bounded memory: the web process never holds the uploaded file as
bytes. Django writes it to a temporary file; it is hashed and copied to the storage a block at a
time; onnxruntime loads it from its path to check it. What the process holds at its peak is the
model being loaded (the parsed graph, then the session's weights), a small multiple of the file.
"""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.servers import Server, memory_kib, peak_memory_reset, start_server

MIB = 1 << 20
HIDDEN = 6_000_000  # iris -> HIDDEN -> 3: about 160 MiB of float32 weights
CONSTANT = 64 * MIB  # besides the model: the request's objects, buffers, onnxruntime's arenas
COPIES = 4  # parsing the graph (its bytes and the parsed copy), then the session making its own


@pytest.fixture(scope="module")
def web(instance, _servers_stopped) -> Iterator[Server]:
    server = start_server(instance, "artifacts", args=["--no-worker", "--workers", "1"])
    _servers_stopped.append(server)
    yield server
    server.stop_soon()


def wide_iris_onnx(path: Path) -> None:
    """An iris classifier with a hidden layer of HIDDEN units, as one .onnx file."""
    from onnx import TensorProto, helper, numpy_helper, save_model

    from predictions.runtime.onnx import IR_VERSION, OPSET

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, HIDDEN), dtype=np.float32), "w1")
    w2 = numpy_helper.from_array(
        rng.standard_normal((HIDDEN, 3), dtype=np.float32) / np.float32(np.sqrt(HIDDEN)), "w2"
    )
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w1"], ["hidden"]),
            helper.make_node("Relu", ["hidden"], ["active"]),
            helper.make_node("MatMul", ["active", "w2"], ["scores"]),
            helper.make_node("Softmax", ["scores"], ["output"], axis=-1),
        ],
        "iris-wide",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        initializer=[w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    save_model(model, str(path))


def test_a_160_mib_onnx_upload_is_never_held_as_bytes(web, instance, tmp_path, figure):
    path = tmp_path / "iris-wide.onnx"
    wide_iris_onnx(path)
    size = path.stat().st_size
    key = instance.manage("createapikey", "admin", "--scopes", "models").stdout.strip()
    pid = web.web_pid()
    peak_memory_reset(pid)
    before = memory_kib(pid, "VmRSS") * 1024

    with path.open("rb") as file:
        response = requests.post(
            web.url("/api/v1/models/iris/versions"),
            files={"artifact": (path.name, file)},
            data={"label": "wide"},
            headers={"X-API-Key": key},
            timeout=300,
        )
    peak = memory_kib(pid, "VmHWM") * 1024 - before

    assert response.status_code == 201, response.text[:300]
    stored = (
        instance.var_dir / "media" / "artifacts" / hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert stored.stat().st_size == size
    figure(
        f"upload of a {size / MIB:.0f} MiB ONNX artifact: the web process's peak memory rose"
        f" {peak / MIB:.0f} MiB, {peak / size:.2f}x the file"
    )
    assert peak <= COPIES * size + CONSTANT
