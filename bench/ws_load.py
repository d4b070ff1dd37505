"""WebSocket load: rows over ``/api/v1/predict/ws``, as many sockets as ``connections``.

Each socket keeps ``window`` rows unanswered: it sends a row whenever an answer comes back, so
the server always has rows to batch, as a producer that streams rows would. The window is the
server's in-flight bound (64) for one socket, and 256 rows shared by the sockets of more, which
keeps the rows queued in the server, and their latency, the same from 4 sockets on. A row's
latency runs from its send to its answer (matched by ``id``).
"""

from __future__ import annotations

import asyncio
import json
import time

import orjson
from websockets.asyncio.client import connect

from bench.loadtypes import LoadResult, LoadSettings
from bench.pyloadgen import _percentiles


async def _socket(url, key, row, deadline, window, out) -> None:
    sent: dict[int, float] = {}
    next_id = 0
    rest = json.dumps({"input_data": row, "model": "iris", "model_version": "v1"})[1:]
    async with connect(url, additional_headers={"X-API-Key": key}, compression=None) as ws:

        async def send_one() -> None:
            nonlocal next_id
            sent[next_id] = time.perf_counter()
            await ws.send(f'{{"id": {next_id}, {rest}')
            next_id += 1

        for _ in range(window):
            await send_one()
        while sent:
            answer = orjson.loads(await ws.recv(decode=False))
            out["latency"].append(time.perf_counter() - sent.pop(answer["id"]))
            if answer["type"] != "prediction":
                out["errors"].append(answer)
            if time.perf_counter() < deadline:
                await send_one()


async def _run(url, key, row, settings: LoadSettings, duration_s: float, window: int):
    out: dict[str, list] = {"latency": [], "errors": []}
    start = time.perf_counter()
    deadline = start + duration_s
    results = await asyncio.gather(
        *(_socket(url, key, row, deadline, window, out) for _ in range(settings.connections)),
        return_exceptions=True,
    )
    elapsed = time.perf_counter() - start
    p50, p99 = _percentiles(out["latency"], [50, 99])
    return LoadResult(
        requests=len(out["latency"]),
        duration_s=elapsed,
        p50_ms=p50,
        p99_ms=p99,
        max_ms=max(out["latency"], default=0.0) * 1e3,
        non200=len(out["errors"]),
        socket_errors=sum(isinstance(r, Exception) for r in results),
        generator="python-websockets",
    )


def run_ws(url: str, key: str, row: list, settings: LoadSettings, duration_s: float) -> LoadResult:
    """Load ``url`` for ``duration_s`` seconds over ``settings.connections`` sockets."""
    window = min(64, max(1, 256 // settings.connections))
    return asyncio.run(_run(url, key, row, settings, duration_s, window))
