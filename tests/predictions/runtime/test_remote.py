"""The remote runtime's requests and answers, read and written by the platform's own V2 codec
(the server side of the same protocol), and its refusals; the calls to a real server are in
tests/e2e/test_remote_mlserver.py."""

import numpy as np
import pytest

from predictions.runtime.errors import UpstreamError
from predictions.runtime.remote import (
    HEADER_LENGTH,
    JSON_MAX_VALUES,
    Answer,
    RemotePredictor,
    RemoteSignature,
    RemoteTarget,
    decode_outputs,
    encode_request,
    url_problem,
)
from predictions.runtime.v2codec import OutgoingTensor, encode_response
from predictions.v2.codec import decode_request
from tests.servers import free_port

TARGET = RemoteTarget(url="http://127.0.0.1:9", model="iris", version="2", credential="tok-123")


def signature(binary: bool) -> RemoteSignature:
    return RemoteSignature("float_input", "FP32", "probabilities", 3, binary=binary)


@pytest.mark.parametrize(
    ("rows", "binary", "sent_binary"),
    [(1, True, False), (JSON_MAX_VALUES // 4 + 1, True, True), (JSON_MAX_VALUES, False, False)],
)
def test_a_request_is_json_unless_it_is_large_and_the_server_takes_binary_tensors(
    rows, binary, sent_binary
):
    X = np.random.default_rng(1).normal(size=(rows, 4)).astype(np.float32)

    body, headers = encode_request(X, signature(binary))
    decoded = decode_request(body, headers.get(HEADER_LENGTH))

    assert (HEADER_LENGTH in headers) is sent_binary
    (tensor,) = decoded.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("float_input", "FP32", (rows, 4))
    # JSON's shortest float32 digits read back as float32 are the same numbers.
    np.testing.assert_array_equal(tensor.data.astype(np.float32), X)
    assert [o.name for o in decoded.outputs] == ["probabilities"]
    assert decoded.outputs[0].binary is (True if sent_binary else None)


@pytest.mark.parametrize("binary", [False, True])
def test_an_answer_is_read_as_float32_rows_in_json_or_binary(binary):
    outputs = np.random.default_rng(2).random((5, 3))  # FP64, as scikit-learn answers
    body, header_length = encode_response(
        model_name="iris",
        model_version="2",
        outputs=[
            OutgoingTensor("label", "BYTES", ["a"] * 5, binary=binary),
            OutgoingTensor("probabilities", "FP64", outputs, binary=binary),
        ],
    )
    headers = {HEADER_LENGTH: str(header_length)} if header_length else {}

    read = decode_outputs(Answer(200, headers, body), TARGET, "probabilities", n_rows=5)

    assert read.dtype == np.float32
    np.testing.assert_allclose(read, outputs, rtol=1e-6)


def test_a_one_dimensional_output_is_one_value_per_row():
    body, _ = encode_response(
        model_name="m",
        model_version="1",
        outputs=[OutgoingTensor("predict", "FP32", np.arange(4, dtype=np.float32), binary=False)],
    )

    read = decode_outputs(Answer(200, {}, body), TARGET, "predict", n_rows=4)

    assert read.shape == (4, 1)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>", "is not a V2 response"),
        (
            b'{"outputs": [{"name": "x", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]}',
            "is BYTES, not numbers",
        ),
        (
            b'{"outputs": [{"name": "p", "datatype": "FP32", "shape": [3, 1], "data": [1, 2, 3]}]}',
            "has shape [3, 1] for 2 rows",
        ),
        (
            b'{"outputs": [{"name": "p", "datatype": "FP32", "shape": [2], "data": [1, 2, 3]}]}',
            "is not a V2 response: output 'p': shape [2] holds 2 values but data has 3",
        ),
        (
            b'{"outputs": [{"name": "a", "datatype": "FP32", "shape": [2], "data": [1, 2]},'
            b' {"name": "b", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}',
            "sent no output 'p'",
        ),
    ],
)
def test_an_answer_that_does_not_fit_is_an_upstream_error_naming_the_upstream(body, message):
    with pytest.raises(UpstreamError) as raised:
        decode_outputs(Answer(200, {}, body), TARGET, "p", n_rows=2)

    assert message in str(raised.value)
    assert "model 'iris' (version 2) at http://127.0.0.1:9" in str(raised.value)


def test_a_refused_connection_is_tried_three_times_and_named_without_the_credential():
    target = RemoteTarget(url=f"http://127.0.0.1:{free_port()}", model="iris", credential="tok-9")
    predictor = RemotePredictor(target, signature(False), n_inputs=4)

    with pytest.raises(UpstreamError) as raised:
        predictor.predict(np.zeros((1, 4)))

    assert str(raised.value) == (
        f"cannot connect to model 'iris' at {target.url} (3 attempts): Connection refused"
    )
    assert "tok-9" not in repr(target) + repr(predictor)
    assert predictor.ready() == str(raised.value)


def test_the_credential_goes_in_its_header():
    assert TARGET.headers() == {"Authorization": "Bearer tok-123"}
    assert RemoteTarget(
        url="http://h", model="m", credential="k", credential_header="X-API-Key"
    ).headers() == {"X-API-Key": "k"}
    assert RemoteTarget(url="http://h", model="m").headers() == {}


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://user:pw@host:8000", "must not hold a user or password"),
        ("ftp://host", "must start with http:// or https://"),
        ("http://host:8000/?x=1", "without a query"),
        ("http://host:port", "is not a URL"),
    ],
)
def test_a_base_url_is_checked(url, problem):
    assert problem in url_problem(url)


def test_paths_keep_a_prefix_and_quote_names():
    target = RemoteTarget(url="https://gw/serving/", model="a b", version="1")

    assert target.model_path("/infer") == "/serving/v2/models/a%20b/versions/1/infer"
    assert target.server_path() == "/serving/v2"
