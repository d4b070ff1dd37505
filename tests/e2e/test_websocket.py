"""End to end: WebSocket predictions (``/api/v1/predict/ws``) from ``manage.py serve``, with the
``websockets`` library's clients: its synchronous client as a program would use it, and its
sans-I/O protocol over a raw socket for clients that misbehave (never read, never answer pings).
"""

import json
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.sync.client import connect
from websockets.uri import parse_uri

from accounts.crypto import generate_key
from tests.servers import chromium, memory_kib, start_server

pytestmark = pytest.mark.e2e
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
PREDICT_FIELDS = {
    "prediction_id",
    "model",
    "model_version",
    "prediction",
    "label",
    "confidence",
    "processing_time",
    "timestamp",
    "cached",
    "routing",
    "input_data",
    "request_id",
}
# The shared server of this module: quick pings and idle timeout, a short send deadline, and
# a largest message that fits in one segment (a larger one would be closed while the client
# still sends it, and the close could be lost to a reset).
FAST = {
    "MLPLATFORM_WS_IDLE_SECONDS": "3",
    "MLPLATFORM_WS_PING_SECONDS": "1",
    "MLPLATFORM_STREAM_SEND_TIMEOUT": "3",
    "MLPLATFORM_WS_MAX_MESSAGE_BYTES": "4096",
}


@pytest.fixture(scope="module")
def server(instance, _servers_stopped):
    server = start_server(instance, "ws", args=["--no-worker"], env=FAST)
    _servers_stopped.append(server)
    yield server
    server.stop_soon()


def ws_url(server) -> str:
    return server.base_url.replace("http://", "ws://") + "/api/v1/predict/ws"


def open_socket(server, key: str | None = None, **options):
    headers = {"X-API-Key": key} if key is not None else {}
    return connect(ws_url(server), additional_headers=headers, open_timeout=10, **options)


def answers(ws, n: int, timeout: float = 10) -> list[dict]:
    return [json.loads(ws.recv(timeout=timeout)) for _ in range(n)]


def closed_with(ws, timeout: float = 10) -> tuple[list[dict], int, str]:
    """The messages received until the server closed the socket, and its close code and reason."""
    received = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            received.append(json.loads(ws.recv(timeout=timeout)))
    return received, closed.value.rcvd.code, closed.value.rcvd.reason


def stored(server, key: str, prediction_id: str) -> requests.Response:
    return requests.get(
        server.url(f"/api/v1/predict/{prediction_id}"), headers={"X-API-Key": key}, timeout=10
    )


def count_predictions(server, key: str, model: str = "iris") -> int:
    response = requests.get(
        server.url(f"/api/v1/predictions?model={model}&page_size=1"),
        headers={"X-API-Key": key},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["count"]


def new_key(instance, *args: str) -> str:
    return instance.manage("createapikey", "demo", *args).stdout.strip()


def jwt(server, instance) -> str:
    response = requests.post(
        server.url("/api/v1/auth/token"),
        json={"username": "demo", "password": instance.passwords["demo"]},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["access"]


# --- answers -----------------------------------------------------------------------------------


def test_answers_carry_the_id_and_the_fields_of_predict_and_are_stored_before_they_are_sent(
    server, instance
):
    key = instance.demo_key
    with open_socket(server, key) as ws:
        ws.send(json.dumps({"id": "a", "input_data": SETOSA, "model_version": "v1"}))
        ws.send(json.dumps({"id": 7, "input_data": VIRGINICA, "model": "iris"}))
        ws.send(json.dumps({"id": "many", "inputs": [SETOSA, VIRGINICA, SETOSA]}))
        received = {}
        for answer in answers(ws, 5):
            # Stored before it was sent: readable the moment the answer arrives.
            read = stored(server, key, answer["prediction_id"])
            assert read.status_code == 200, read.text
            assert read.json()["label"] == answer["label"]
            assert read.json()["input_data"] == answer["input_data"]
            received[(answer["id"], answer.get("index"))] = answer

    assert set(received) == {("a", None), (7, None), ("many", 0), ("many", 1), ("many", 2)}
    for answer in received.values():
        assert answer["type"] == "prediction"
        assert set(answer) >= PREDICT_FIELDS
    assert received[("a", None)]["model_version"] == "v1"
    assert received[("a", None)]["routing"] == "explicit"
    labels = [received[("many", i)]["label"] for i in range(3)]
    assert labels == ["setosa", "virginica", "setosa"]
    assert received[(7, None)]["label"] == "virginica"


def test_a_browser_sends_its_key_or_token_as_a_subprotocol_and_only_mlplatform_is_echoed(
    server, instance
):
    token = jwt(server, instance)
    for secret in (instance.demo_key, token):
        with open_socket(server, subprotocols=["mlplatform", secret]) as ws:
            assert ws.subprotocol == "mlplatform"
            ws.send(json.dumps({"id": 1, "input_data": SETOSA}))
            (answer,) = answers(ws, 1)
            assert answer["type"] == "prediction" and answer["label"] == "setosa"


def test_a_jwt_in_the_authorization_header_opens_a_socket(server, instance):
    headers = {"Authorization": f"Bearer {jwt(server, instance)}"}
    with connect(ws_url(server), additional_headers=headers, open_timeout=10) as ws:
        ws.send(json.dumps({"id": "j", "input_data": VIRGINICA}))
        (answer,) = answers(ws, 1)

    assert answer["id"] == "j" and answer["label"] == "virginica"


def test_a_plain_http_request_gets_426(server):
    response = requests.get(server.url("/api/v1/predict/ws"), timeout=10)

    assert response.status_code == 426
    assert response.headers["Upgrade"] == "websocket"
    assert response.json()["code"] == "upgrade_required"


# --- refusals: close codes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "not_authenticated"),
        ({"X-API-Key": "a well-formed key of no one"}, "invalid_api_key"),
        ({"X-API-Key": "not-a-key"}, "malformed_api_key"),
        ({"Authorization": "Bearer not.a.token"}, "token_not_valid"),
    ],
)
def test_without_valid_credentials_the_socket_is_closed_with_4401(server, instance, headers, code):
    if headers.get("X-API-Key") == "a well-formed key of no one":
        headers = {"X-API-Key": generate_key().raw}
    with connect(ws_url(server), additional_headers=headers, open_timeout=10) as ws:
        received, close_code, reason = closed_with(ws)

    assert close_code == 4401
    assert [(m["type"], m["id"], m["code"]) for m in received] == [("error", None, code)]
    assert reason and reason in received[0]["detail"]


def test_a_key_without_the_stream_or_predict_scope_is_closed_with_4403(server, instance):
    key = new_key(instance, "--scopes", "read")
    with open_socket(server, key) as ws:
        received, close_code, _ = closed_with(ws)

    assert close_code == 4403
    assert received[0]["code"] == "missing_scope"
    assert received[0]["detail"] == "This credential lacks the 'stream' or 'predict' scope."


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "A message is not JSON"),
        ("[1, 2]", "A message must be a JSON object."),
        (b"\x00\x01", "Send JSON objects as text messages."),
    ],
)
def test_a_message_that_is_not_a_json_object_in_a_text_frame_is_closed_with_1008(
    server, instance, frame, reason
):
    with open_socket(server, instance.demo_key) as ws:
        ws.send(frame)
        received, close_code, closed_reason = closed_with(ws)

    assert (received, close_code) == ([], 1008)
    assert closed_reason.startswith(reason)


def test_a_message_past_the_largest_size_is_closed_with_1009(server, instance):
    row = [1.0] * 1200  # some 5 KB of JSON, past this server's 4 KiB
    with open_socket(server, instance.demo_key) as ws:
        ws.send(json.dumps({"id": "big", "input_data": row}))
        received, close_code, _ = closed_with(ws)

    assert (received, close_code) == ([], 1009)


# --- refused rows: error answers, the socket stays open ----------------------------------------


def test_bad_rows_and_unknown_models_get_errors_with_their_id_and_nothing_is_stored(
    server, instance
):
    key = instance.demo_key
    bad = [
        ({"id": "short", "input_data": [1, 2]}, "invalid_input", "expected 4 features, got 2"),
        ({"id": "nan", "input_data": [1, 2, "NaN", 4]}, "invalid_input", "input_data[2]"),
        ({"id": "who", "input_data": SETOSA, "model": "nope"}, "model_not_found", "nope"),
        ({"id": "v9", "input_data": SETOSA, "model_version": "v9"}, "version_not_found", "v9"),
        ({"id": "typo", "input_dat": SETOSA}, "invalid_input", "Unknown fields: input_dat."),
        ({"id": "both", "input_data": SETOSA, "inputs": [SETOSA]}, "invalid_input", "either"),
        ({"id": "none", "inputs": []}, "invalid_input", "non-empty list"),
        ({"id": "slow", "input_data": SETOSA, "timeout": 0}, "invalid_input", "timeout"),
        ({"id": ["x"], "input_data": SETOSA}, "invalid_input", "id must be"),
    ]
    before = count_predictions(server, key)
    with open_socket(server, key) as ws:
        for message, _, _ in bad:
            ws.send(json.dumps(message))
        errors = {json.dumps(a["id"]): a for a in answers(ws, len(bad))}
        ws.send(json.dumps({"id": "after", "inputs": [SETOSA, [1, 2, 3]]}))
        after = sorted(answers(ws, 2), key=lambda a: a["index"])
    left = count_predictions(server, key) - before

    for message, code, named in bad:
        ident = message["id"] if isinstance(message["id"], str) else None
        error = errors[json.dumps(ident)]
        assert (error["type"], error["code"]) == ("error", code), error
        assert named in error["detail"], error
    assert after[0]["type"] == "prediction" and after[0]["label"] == "setosa"
    assert after[1] | {"detail": None} == {
        "type": "error",
        "id": "after",
        "index": 1,
        "code": "invalid_input",
        "detail": None,
    }
    assert after[1]["detail"] == "expected 4 features, got 3"
    assert left == 1  # the one good row


# --- limits ------------------------------------------------------------------------------------


def test_each_row_counts_against_the_rate_limit_then_past_the_grace_4429(server, instance):
    key = new_key(instance, "--scopes", "predict", "--rate", "predict=3/m")
    grace = 10  # WS_RATE_LIMIT_GRACE's default
    with open_socket(server, key) as ws:
        ws.send(json.dumps({"id": "rows", "inputs": [SETOSA] * 5}))  # five rows, three allowed
        first = answers(ws, 5)
        for i in range(grace):
            ws.send(json.dumps({"id": i, "input_data": SETOSA}))
        received, close_code, reason = closed_with(ws)

    assert sorted(a["type"] for a in first) == ["error"] * 2 + ["prediction"] * 3
    assert {a["code"] for a in first if a["type"] == "error"} == {"rate_limited"}
    # The row that makes one more than the grace is answered too, then the socket closes.
    assert [a["code"] for a in received] == ["rate_limited"] * (grace + 1 - 2)
    assert close_code == 4429
    assert reason.startswith("Rate limit of 3 requests per minute for 'predict' exceeded")


def test_sockets_past_the_users_cap_are_closed_with_4429_and_a_closed_one_frees_its_slot(
    serve, instance
):
    server = serve(
        "ws-cap",
        args=["--no-worker", "--workers", "1"],
        env={"MLPLATFORM_MAX_OPEN_STREAMS_PER_USER": "2"},
    )
    key = instance.demo_key
    try:
        with open_socket(server, key):  # held open throughout
            with open_socket(server, key), open_socket(server, key) as third:
                received, close_code, _ = closed_with(third)
            statuses, deadline = [], time.monotonic() + 10
            while time.monotonic() < deadline:  # the server frees a slot as it sees the close
                with open_socket(server, key) as again:
                    again.send(json.dumps({"id": "in", "input_data": SETOSA}))
                    try:
                        statuses.append(json.loads(again.recv(timeout=10))["type"])
                    except ConnectionClosed:
                        statuses.append("closed")
                if statuses[-1] == "prediction":
                    break
                time.sleep(0.2)
    finally:
        server.stop()

    assert close_code == 4429
    assert received[0]["code"] == "too_many_streams"
    assert statuses[-1] == "prediction", statuses


def test_an_idle_socket_is_closed_with_4408(server, instance):
    with open_socket(server, instance.demo_key) as ws:
        ws.send(json.dumps({"id": 1, "input_data": SETOSA}))
        answers(ws, 1)
        quiet_from = time.monotonic()
        received, close_code, reason = closed_with(ws)  # the client answers pings meanwhile
        waited = time.monotonic() - quiet_from

    assert (received, close_code, reason) == ([], 4408, "Idle for 3 s.")
    assert 2.5 < waited < 8


# --- clients that misbehave, over a raw socket ---------------------------------------------------


def raw_client(server, headers: dict, *, rcvbuf: int | None = None):
    """A socket past the handshake, and the ``websockets`` protocol state that frames for it."""
    address = urlsplit(server.base_url)
    protocol = ClientProtocol(parse_uri(ws_url(server)))
    request = protocol.connect()
    for name, value in headers.items():
        request.headers[name] = value
    sock = socket.socket()
    if rcvbuf is not None:  # a client across a network: small segments, a small window
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((address.hostname, address.port))
    protocol.send_request(request)
    sock.sendall(b"".join(protocol.data_to_send()))
    while protocol.state is State.CONNECTING and protocol.handshake_exc is None:
        protocol.receive_data(sock.recv(4096))
    assert protocol.state is State.OPEN, protocol.handshake_exc
    protocol.events_received()  # the handshake's response
    return sock, protocol


def test_a_client_that_answers_no_ping_is_closed_with_1011(server, instance):
    sock, protocol = raw_client(server, {"X-API-Key": instance.demo_key})
    started, frames = time.monotonic(), []
    with sock:
        while time.monotonic() - started < 10:
            data = sock.recv(4096)
            if not data:
                break
            # Parse what arrives, but send nothing back: no pong.
            protocol.receive_data(data)
            frames += protocol.events_received()
    took = time.monotonic() - started

    assert [f.opcode for f in frames if f.opcode != Opcode.PING] == [Opcode.CLOSE]
    assert protocol.close_rcvd.code == 1011 and "ping timeout" in protocol.close_rcvd.reason
    assert took < 3  # a ping after 1 s, its pong due within 1 s: before the 3 s idle timeout


def test_a_client_that_sends_and_never_reads_is_read_no_further_and_memory_stays_bounded(
    serve, instance
):
    # One process whose rate limits no row here reaches; answers are left unread for 30 s.
    server = serve(
        "ws-pressure",
        args=["--no-worker", "--workers", "1"],
        env={
            "MLPLATFORM_USER_RATE_LIMITS": "predict=100000000/m",
            "MLPLATFORM_STREAM_SEND_TIMEOUT": "30",
        },
    )
    key = new_key(instance, "--scopes", "predict,read", "--rate", "predict=100000000/m")
    try:
        _unread_answers_stop_the_reading(server, key)
    finally:
        server.stop()


def _unread_answers_stop_the_reading(server, key: str) -> None:
    pid = server.web_pid()
    before_kib = memory_kib(pid, "VmRSS")
    before_rows = count_predictions(server, key)
    sock, protocol = raw_client(server, {"X-API-Key": key}, rcvbuf=4096)
    message = json.dumps({"id": 0, "input_data": SETOSA, "model_version": "v1"}).encode()
    protocol.send_text(message)
    frame = b"".join(protocol.data_to_send())  # one masked frame, sent over and over
    offered = 200 * 1024 * 1024 // len(frame) * len(frame)  # 200 MB of rows (some 3 million)
    sock.settimeout(3)
    sent = 0
    batch = memoryview(frame * 10_000)
    with sock:
        try:
            while sent < offered:  # whole frames: a partial send goes on where it stopped
                sent += sock.send(batch[sent % len(batch) :])
        except TimeoutError:
            pass  # the server stopped reading: nothing more goes out for 3 s
        stalled_rows = _settled_count(server, key) - before_rows
        after_kib = memory_kib(pid, "VmRSS")

    assert sent < 16 * 1024 * 1024, sent  # the socket buffers' worth, not the 200 MB
    assert 64 <= stalled_rows < 2_000, stalled_rows  # in flight, and answers in the buffers
    assert after_kib - before_kib < 32 * 1024, (before_kib, after_kib)
    still = requests.post(
        server.url("/api/v1/predict"),
        json={"input_data": SETOSA},
        headers={"X-API-Key": key},
        timeout=10,
    )
    assert still.status_code == 200  # the process serves others meanwhile


def _settled_count(server, key: str, quiet_s: float = 1.5) -> int:
    seen, deadline = [count_predictions(server, key)], time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.25)
        seen.append(count_predictions(server, key))
        window = int(quiet_s / 0.25) + 1
        if len(seen) > window and len(set(seen[-window:])) == 1:
            return seen[-1]
    pytest.fail(f"predictions still being stored: {seen}")


# --- the demo page, in headless Chromium -------------------------------------------------------


def test_the_landing_page_links_a_demo_page_that_shows_answers_as_they_arrive(server, instance):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    with chromium() as chrome:
        chrome.get(server.url("/"))
        chrome.find_element(By.LINK_TEXT, "WebSocket predictions").click()
        chrome.find_element(By.ID, "key").send_keys(instance.demo_key)
        chrome.find_element(By.ID, "connect").click()
        WebDriverWait(chrome, 20).until(lambda c: c.find_element(By.ID, "status").text == "open")
        chrome.find_element(By.ID, "send").click()
        row = chrome.find_element(By.ID, "row")
        row.clear()
        row.send_keys("1, 2")
        chrome.find_element(By.ID, "send").click()
        WebDriverWait(chrome, 20).until(
            lambda c: len(c.find_elements(By.CSS_SELECTOR, "#answers tr")) == 2
        )
        shown = {
            tr.get_attribute("class"): tr.text
            for tr in chrome.find_elements(By.CSS_SELECTOR, "#answers tr")
        }

    assert "setosa" in shown["prediction"]
    prediction_id = shown["prediction"].split()[-1]
    assert stored(server, instance.demo_key, prediction_id).status_code == 200
    assert "invalid_input: expected 4 features, got 2" in shown["error"]
