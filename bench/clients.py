"""The clients wrk cannot be: rows over a WebSocket, and prediction streams left unread."""

import asyncio
import contextlib
import json
import socket
import statistics
import time
from collections.abc import Iterator

import orjson
from websockets.asyncio.client import connect

from bench.harness import Instance, Result, Server

# A stalled stream's client announces Ethernet's segment size and a small receive buffer, as a
# client across a network would: over loopback Linux would grow the server's send buffer past a
# whole stream, and the server would never wait for the client.
STALLED_MSS, STALLED_RCVBUF, STREAM_ROWS = 1400, 4096, 1000


def ws_load(url: str, key: str, body: dict, conns: int, seconds: float) -> Result:
    """Rows over `conns` sockets for `seconds`; each keeps a window of rows unanswered (64 for
    one socket, 256 shared by more), sending a row whenever an answer comes back."""
    window = min(64, max(1, 256 // conns))
    latencies: list[float] = []
    errors = 0
    rest = json.dumps(body)[1:]

    async def one(deadline: float) -> None:
        nonlocal errors
        sent: dict[int, float] = {}
        async with connect(url, additional_headers={"X-API-Key": key}, compression=None) as ws:
            for i in range(window):
                sent[i] = time.perf_counter()
                await ws.send(f'{{"id": {i}, {rest}')
            next_id = window
            while sent:
                answer = orjson.loads(await ws.recv(decode=False))
                latencies.append(time.perf_counter() - sent.pop(answer["id"]))
                errors += answer["type"] != "prediction"
                if time.perf_counter() < deadline:
                    sent[next_id] = time.perf_counter()
                    await ws.send(f'{{"id": {next_id}, {rest}')
                    next_id += 1

    async def run() -> float:
        nonlocal errors
        start = time.perf_counter()
        clients = (one(start + seconds) for _ in range(conns))
        done = await asyncio.gather(*clients, return_exceptions=True)
        errors += sum(isinstance(d, Exception) for d in done)
        return time.perf_counter() - start

    elapsed = asyncio.run(run())
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return Result(len(latencies), elapsed, 1e3 * cuts[49], 1e3 * cuts[98], errors)


@contextlib.contextmanager
def stalled_streams(server: Server, inst: Instance, count: int) -> Iterator[None]:
    """`count` POST /predict/stream of STREAM_ROWS rows, one every 0.1 s, whose clients stop
    reading after the first prediction; held until the server's CPU has settled, then closed."""
    body = json.dumps(
        {"inputs": [[5.1, 3.5, 1.4, 0.2]] * STREAM_ROWS, "model": "iris", "model_version": "v2"}
    ).encode()
    host, port = server.base.removeprefix("http://").split(":")
    head = (
        f"POST /api/v1/predict/stream HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {inst.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            socks.append(sock)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, STALLED_MSS)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
            sock.settimeout(30)
            sock.connect((host, int(port)))
            sock.sendall(head + body)
            seen = b""
            while b"event: prediction" not in seen:
                chunk = sock.recv(4096)
                if not chunk or (seen == b"" and b" 200 " not in chunk.split(b"\r\n", 1)[0]):
                    raise RuntimeError(f"a stream was refused: {chunk[:200]!r}")
                seen += chunk
            time.sleep(0.1)
        # The streams compute rows until their clients' buffers are full; then they wait.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            before = server.cpu_s()
            time.sleep(1)
            if server.cpu_s() - before < 0.05:
                break
        yield
    finally:
        for sock in socks:
            sock.close()
        time.sleep(2)  # the server notices the clients left and frees their slots
