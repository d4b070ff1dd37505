"""V2 request decoding and response encoding, checked against tritonclient's own encoder/parser.

No database, no HTTP: the codec and the signature are pure functions.
"""

import gzip
import json

import numpy as np
import pytest
import tritonclient.http as httpclient

from predictions.runtime.v2codec import (
    OutgoingTensor,
    ProtocolError,
    Tensor,
    decode_bytes,
    encode_bytes,
    encode_response,
)
from predictions.v2.codec import InferenceRequest, RequestedOutput, decode_request
from predictions.v2.signature import (
    Signature,
    feature_rows,
    output_tensors,
    selected_outputs,
    timeout_seconds,
)

IRIS = Signature("iris", n_features=4, n_outputs=3, classifier=True)
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype="f4")


def triton_body(*inputs, outputs=None, **kwargs) -> tuple[bytes, str | None]:
    """A request body exactly as tritonclient.http sends it."""
    body, header_length = httpclient.InferenceServerClient.generate_request_body(
        list(inputs), outputs=outputs, **kwargs
    )
    return body, None if header_length is None else str(header_length)


def triton_input(array: np.ndarray, name="input", datatype="FP32", binary=True):
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def json_body(document: dict) -> bytes:
    return json.dumps(document).encode()


def one_input(data, shape=(2, 4), datatype="FP32", name="input") -> bytes:
    return json_body(
        {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}]}
    )


# --- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
def test_a_tritonclient_request_decodes_to_the_same_tensor(binary):
    body, header_length = triton_body(triton_input(ROWS, binary=binary), request_id="r-1")

    request = decode_request(body, header_length)

    assert (header_length is not None) is binary
    assert request.id == "r-1"
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("input", "FP32", (2, 4))
    np.testing.assert_array_equal(tensor.data.astype("f4"), ROWS)
    # Without requested outputs tritonclient asks for every output in binary.
    assert request.outputs is None and request.binary_output is True


def test_flat_and_nested_json_data_give_the_same_rows():
    flat = decode_request(one_input(ROWS.astype(float).ravel().tolist()))
    nested = decode_request(one_input(ROWS.astype(float).tolist()))

    np.testing.assert_array_equal(flat.inputs[0].data, nested.inputs[0].data)
    assert flat.inputs[0].data.shape == (2, 4)


def test_json_numbers_are_kept_as_sent():
    request = decode_request(one_input([5.1, 3.5, 1.4, 0.2], shape=(1, 4)))

    assert request.inputs[0].data.tolist() == [[5.1, 3.5, 1.4, 0.2]]


def test_several_binary_and_json_inputs_are_read_in_order():
    a = np.arange(6, dtype="<f8").reshape(2, 3)
    b = np.array([[1, -2]], dtype="<i4")
    c = np.array([b"setosa", b"\x00\xffbytes"], dtype=object)
    body, header_length = triton_body(
        triton_input(a, "a", "FP64"),
        triton_input(np.array([[True, False]]), "flags", "BOOL", binary=False),
        triton_input(b, "b", "INT32"),
        triton_input(c, "c", "BYTES"),
    )

    inputs = {t.name: t for t in decode_request(body, header_length).inputs}

    np.testing.assert_array_equal(inputs["a"].data, a)
    assert inputs["flags"].data.tolist() == [[True, False]]
    np.testing.assert_array_equal(inputs["b"].data, b)
    assert inputs["c"].data.tolist() == [b"setosa", b"\x00\xffbytes"]


def test_requested_outputs_and_their_binary_flags_are_read():
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=False),
        httpclient.InferRequestedOutput("prediction"),
    ]
    body, header_length = triton_body(triton_input(ROWS), outputs=outputs)

    request = decode_request(body, header_length)

    assert request.outputs == (
        RequestedOutput("label", False),
        RequestedOutput("prediction", True),
    )


def test_bytes_elements_round_trip():
    values = ["setosa", "", "ünïcode"]

    assert decode_bytes(encode_bytes(values), 3, "x").tolist() == [v.encode() for v in values]


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"", None, "the request body is empty"),
        (b"[1, 2]", None, "must be a JSON object, got array"),
        (b'{"inputs": [}', None, "Malformed JSON"),
        (b'{"inputs": [NaN]}', None, "NaN, Infinity .* are not finite numbers"),
        (b'{"inputs": [1e999]}', None, "are not finite numbers"),
        (b'{"inputs": []}', None, "inputs must be a non-empty array"),
        (b'{"id": 7, "inputs": []}', None, "id must be a string"),
        (b'{"inputs": [{"name": "input"}]}', None, "datatype must be one of"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, -4], "data": []}]}',
            None,
            "shape must be an array of non-negative integers",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2]}]}',
            None,
            "neither data nor parameters.binary_data_size",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1],'
            b' "parameters": {"shared_memory_region": "r"}}]}',
            None,
            "shared-memory extension is not supported",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],'
            b' "outputs": [{"name": "label", "parameters": {"classification": 2}}]}',
            None,
            "classification extension is not supported",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},'
            b' {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            None,
            "each input name may appear only once",
        ),
    ],
)
def test_malformed_requests_are_refused_with_the_reason(body, header_length, message):
    with pytest.raises(ProtocolError, match=message):
        decode_request(body, header_length)


@pytest.mark.parametrize(
    ("data", "shape", "datatype", "message"),
    [
        ([1.0, 2.0, 3.0], (1, 4), "FP32", r"shape \[1, 4\] holds 4 values but data has 3"),
        ([[1.0, 2.0], [3.0]], (1, 3), "FP32", "nested data arrays must all have the same length"),
        ([[1.0, 2.0], 3.0, 4.0], (1, 4), "FP32", "mixes arrays and values"),
        (
            [1.0, "2", 3.0, 4.0],
            (1, 4),
            "FP32",
            r"input 'input'.data\[1\] must be a number, got string",
        ),
        ([1.0, True, 3.0, 4.0], (1, 4), "FP32", r"data\[1\] must be a number, got boolean"),
        ([1.0, None, 3.0, 4.0], (1, 4), "FP32", r"data\[1\] must be a number, got null"),
        ([1, 2, 3, 4.5], (1, 4), "INT32", r"data\[3\] must be an integer, got number"),
        ([1, 2, 3, 300], (1, 4), "INT8", r"data\[3\] is out of range for INT8"),
        ([1, 0, 1, 1], (1, 4), "BOOL", r"data\[0\] must be true or false, got number"),
        ("1,2,3,4", (1, 4), "FP32", "data must be an array, got string"),
    ],
)
def test_json_data_that_does_not_fit_its_datatype_or_shape_is_refused(
    data, shape, datatype, message
):
    with pytest.raises(ProtocolError, match=message):
        decode_request(one_input(data, shape=shape, datatype=datatype))


def binary_request(declared_size: int, raw: bytes, header_length: str | None = "auto") -> tuple:
    head = json_body(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": declared_size},
                }
            ]
        }
    )
    if header_length == "auto":
        header_length = str(len(head))
    return head + raw, header_length


@pytest.mark.parametrize(
    ("declared", "raw", "header_length", "message"),
    [
        (16, b"\x00" * 12, "auto", "binary_data_size is 16 bytes but only 12 .*truncated"),
        (16, b"\x00" * 20, "auto", "4 bytes of binary data that no input claims"),
        (
            12,
            b"\x00" * 12,
            "auto",
            r"binary_data_size is 12 bytes but shape \[1, 4\] of FP32 takes 16",
        ),
        (16, b"", None, "no Inference-Header-Content-Length header"),
        (16, b"\x00" * 16, "abc", "Inference-Header-Content-Length must be a number"),
        (16, b"\x00" * 16, "100000", "Inference-Header-Content-Length is 100000 but the body"),
        (16, b"\x00" * 16, "0", "Inference-Header-Content-Length is 0"),
        (-1, b"", "auto", "binary_data_size must be a number of bytes"),
    ],
)
def test_binary_data_whose_sizes_do_not_add_up_is_refused(declared, raw, header_length, message):
    body, header = binary_request(declared, raw, header_length)

    with pytest.raises(ProtocolError, match=message):
        decode_request(body, header)


def test_a_binary_body_without_its_header_is_explained():
    body, _ = triton_body(triton_input(ROWS))

    with pytest.raises(ProtocolError, match="needs the Inference-Header-Content-Length header"):
        decode_request(body, None)


def test_truncated_bytes_elements_are_refused():
    data = encode_bytes(["abc", "defg"])

    with pytest.raises(ProtocolError, match="element 1 is longer than the data left"):
        decode_bytes(data[:-1], 2, "input 'c'")
    with pytest.raises(ProtocolError, match="1 bytes follow the last BYTES element"):
        decode_bytes(data + b"x", 2, "input 'c'")


# --- responses --------------------------------------------------------------------------------


def texts(array: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]


def response_outputs(binary: bool) -> list[OutgoingTensor]:
    outputs = np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7]], dtype="f4")
    return output_tensors(
        [RequestedOutput(n, binary) for n in ("prediction", "label", "confidence")]
        + [RequestedOutput("prediction_id", not binary)],
        outputs=outputs,
        labels=["setosa", "virginica"],
        prediction_ids=["id-1", "id-2"],
    )


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_parses_the_encoded_response(binary):
    body, header_length = encode_response(
        model_name="iris",
        model_version="v1",
        request_id="r-1",
        parameters={"routing": "explicit"},
        outputs=response_outputs(binary),
    )

    result = httpclient.InferenceServerClient.parse_response_body(body, header_length=header_length)

    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "iris",
        "v1",
        "r-1",
    )
    assert response["parameters"] == {"routing": "explicit"}
    np.testing.assert_array_equal(
        result.as_numpy("prediction"), np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7]], "f4")
    )
    assert result.as_numpy("prediction").dtype == np.float32
    # tritonclient gives BYTES as bytes from binary data and as str from JSON.
    assert texts(result.as_numpy("label")) == ["setosa", "virginica"]
    np.testing.assert_array_equal(result.as_numpy("confidence"), np.array([0.9, 0.7], "f4"))
    assert texts(result.as_numpy("prediction_id")) == ["id-1", "id-2"]


def test_a_json_only_response_has_no_header_length_and_flat_data():
    body, header_length = encode_response(
        model_name="iris", model_version="v1", outputs=response_outputs(False)[:1]
    )

    assert header_length is None
    document = json.loads(body)
    assert "id" not in document
    assert document["outputs"][0]["data"] == pytest.approx([0.9, 0.05, 0.05, 0.1, 0.2, 0.7])
    assert document["outputs"][0]["shape"] == [2, 3]


def test_a_binary_response_header_says_where_the_data_starts():
    body, header_length = encode_response(
        model_name="iris", model_version="v1", outputs=response_outputs(True)[:1]
    )

    header = json.loads(body[:header_length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 24}
    assert len(body) == header_length + 24


# --- the model signature ------------------------------------------------------------------------


def request_with(*tensors: Tensor, outputs=None, **parameters) -> InferenceRequest:
    return InferenceRequest(id=None, inputs=tensors, outputs=outputs, parameters=parameters)


def tensor(data, name="input", datatype="FP32") -> Tensor:
    array = np.asarray(data)
    return Tensor(name, datatype, array.shape, array)


def test_feature_rows_are_float32_and_the_input_is_kept_as_sent():
    sent = np.array([[5.1, 3.5, 1.4, 0.2]])

    rows, kept = feature_rows(request_with(tensor(sent, datatype="FP64")), IRIS, max_rows=10)

    assert rows.dtype == np.float32 and rows.shape == (1, 4)
    assert kept.tolist() == [[5.1, 3.5, 1.4, 0.2]]


def test_integer_rows_are_accepted():
    rows, _ = feature_rows(
        request_with(tensor(np.array([[5, 3, 1, 0]], "i8"), datatype="INT64")), IRIS, max_rows=1
    )

    assert rows.tolist() == [[5.0, 3.0, 1.0, 0.0]]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            request_with(tensor(ROWS, "x")),
            "unknown input 'x'; model 'iris' takes one input 'input'",
        ),
        (
            request_with(tensor(ROWS), tensor(ROWS, "extra")),
            "got 2 inputs \\('input', 'extra'\\)",
        ),
        (request_with(tensor(ROWS > 0, datatype="BOOL")), "datatype BOOL is not accepted"),
        (
            request_with(tensor(np.array([[b"a"] * 4], dtype=object), datatype="BYTES")),
            "datatype BYTES is not accepted",
        ),
        (request_with(tensor(ROWS[0])), r"has shape \[4\]; it must be \[rows, 4\]"),
        (request_with(tensor(np.zeros((0, 4), "f4"))), "must not be empty"),
        (request_with(tensor(ROWS[:, :3])), "expected 4 features, got 3"),
        (request_with(tensor(np.zeros((11, 4), "f4"))), "has 11 rows; at most 10 are allowed"),
        (
            request_with(tensor(np.array([[1, 2, np.nan, 4]], "f4"))),
            r"input 'input'\[0\]\[2\] is not a finite number",
        ),
        (
            request_with(tensor(np.array([[1, 2, 3, 4], [1, 1e300, 3, 4]]), datatype="FP64")),
            r"input 'input'\[1\]\[1\] is not a finite number",
        ),
    ],
)
def test_feature_rows_are_checked_as_the_rest_api_checks_input_data(request_, message):
    with pytest.raises(ProtocolError, match=message):
        feature_rows(request_, IRIS, max_rows=10)


def test_every_output_is_sent_when_none_is_named_with_the_requests_binary_default():
    selected = selected_outputs(request_with(tensor(ROWS), binary_data_output=True), IRIS)

    assert selected == [
        RequestedOutput("prediction", True),
        RequestedOutput("label", True),
        RequestedOutput("confidence", True),
        RequestedOutput("prediction_id", True),
    ]


def test_named_outputs_are_sent_in_the_order_asked_and_unknown_ones_are_refused():
    wanted = (RequestedOutput("label", None), RequestedOutput("prediction", False))

    assert selected_outputs(request_with(tensor(ROWS), outputs=wanted), IRIS) == [
        RequestedOutput("label", False),
        RequestedOutput("prediction", False),
    ]
    with pytest.raises(ProtocolError, match="unknown output 'probs'; model 'iris' gives"):
        selected_outputs(
            request_with(tensor(ROWS), outputs=(RequestedOutput("probs", None),)), IRIS
        )


def test_a_regressor_has_no_label_or_confidence_output():
    regressor = Signature("price", n_features=3, n_outputs=1, classifier=False)

    assert [spec.name for spec in regressor.outputs] == ["prediction", "prediction_id"]


def test_timeout_is_read_in_microseconds_and_bounded():
    assert timeout_seconds({}, limit=300) is None
    assert timeout_seconds({"timeout": 250_000}, limit=300) == 0.25
    with pytest.raises(ProtocolError, match="at most 300 seconds"):
        timeout_seconds({"timeout": 301_000_000}, limit=300)
    with pytest.raises(ProtocolError, match="positive number of microseconds"):
        timeout_seconds({"timeout": "soon"}, limit=300)


def test_gzip_is_not_the_codecs_business():
    # Content-Encoding is undone by the view before the codec sees the body.
    with pytest.raises(ProtocolError, match="Malformed JSON"):
        decode_request(gzip.compress(one_input(ROWS.tolist())))
