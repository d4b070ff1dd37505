"""Fallback load generator: asyncio keep-alive HTTP/1.1 connections, one process, no threads."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import numpy as np

from bench.loadtypes import LoadResult, LoadSettings, Target

MAX_REQUESTS = 5_000_000  # hard cap on top of the time limit


def _encode(target: Target, settings: LoadSettings, host: str, path: str) -> bytes:
    """Build the raw request once; every request on every connection reuses it."""
    body = target.body.encode()
    headers = {
        "Host": host,
        "Connection": "keep-alive" if settings.keepalive else "close",
        "Content-Length": str(len(body)),
        **target.headers,
    }
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length or chunked body); return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if "content-length" in fields:
        await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    return status


async def _connection(
    host: str, port: int, raw: bytes, deadline: float, settings: LoadSettings, out: dict[str, list]
) -> None:
    """Send requests back to back until the deadline; reconnect for each without keep-alive."""
    writer = None
    try:
        while time.perf_counter() < deadline and len(out["latency"]) < MAX_REQUESTS:
            start = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(raw)
                status = await asyncio.wait_for(_read_response(reader), settings.timeout_s)
            except (TimeoutError, asyncio.IncompleteReadError, OSError):
                out["socket_errors"].append(1)
                return
            out["latency"].append(time.perf_counter() - start)
            if status != 200:
                out["non200"].append(status)
            if not settings.keepalive:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def _run(target: Target, settings: LoadSettings, duration_s: float) -> LoadResult:
    """Drive `settings.connections` connections for duration_s seconds."""
    parts = urlsplit(target.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    raw = _encode(target, settings, parts.netloc, parts.path or "/")
    out: dict[str, list] = {"latency": [], "non200": [], "socket_errors": []}
    start = time.perf_counter()
    deadline = start + duration_s
    tasks = [
        _connection(host, port, raw, deadline, settings, out) for _ in range(settings.connections)
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.perf_counter() - start
    lat = np.asarray(out["latency"]) * 1e3
    pct = np.percentile(lat, [50, 99]) if lat.size else np.zeros(2)
    return LoadResult(
        requests=len(lat),
        duration_s=elapsed,
        p50_ms=float(pct[0]),
        p99_ms=float(pct[1]),
        max_ms=float(lat.max()) if lat.size else 0.0,
        non200=len(out["non200"]),
        socket_errors=len(out["socket_errors"]) + sum(isinstance(r, Exception) for r in results),
        generator="python",
    )


def run(target: Target, settings: LoadSettings, duration_s: float) -> LoadResult:
    """Measure target for duration_s seconds with the asyncio generator."""
    return asyncio.run(_run(target, settings, duration_s))
