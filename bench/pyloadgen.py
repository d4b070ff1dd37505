"""Python load generator: asyncio keep-alive HTTP/1.1 connections, one process, no threads.

Two modes: closed loop (`run`, the fallback when wrk is missing: each connection sends its next
request when the previous answer arrives) and open loop (`run_paced`: requests leave at fixed
intervals whatever the server does, and latency counts from the scheduled send time).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import numpy as np

from bench.loadtypes import LoadResult, LoadSettings, PacedResult, Target
from bench.servers import socket_owners

MAX_REQUESTS = 5_000_000  # hard cap on top of the time limit
GENERATOR_EVENT_MS = 5.0  # lateness of the paced loop noted with its time (PacedResult)


def _encode(target: Target, keepalive: bool, host: str, path: str) -> bytes:
    """Build the raw request once; every request on every connection reuses it."""
    body = target.body.encode()
    headers = {
        "Host": host,
        "Connection": "keep-alive" if keepalive else "close",
        "Content-Length": str(len(body)),
        **target.headers,
    }
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


def _address(target: Target, keepalive: bool) -> tuple[str, int, bytes]:
    """Host, port and the encoded request of a target."""
    parts = urlsplit(target.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    return host, port, _encode(target, keepalive, parts.netloc, parts.path or "/")


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one response (Content-Length or chunked body); return its status code and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if "content-length" in fields:
        return status, await reader.readexactly(int(fields["content-length"]))
    chunks = []
    if fields.get("transfer-encoding", "").lower() == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append((await reader.readexactly(size + 2))[:-2])
        await reader.readuntil(b"\r\n")
    return status, b"".join(chunks)


def _percentiles(seconds: list[float], points: list[float]) -> list[float]:
    """Percentiles in milliseconds (zeros when there is no sample)."""
    if not seconds:
        return [0.0] * len(points)
    return [float(v) for v in np.percentile(np.asarray(seconds) * 1e3, points)]


# --- closed loop ------------------------------------------------------------------------


async def _connection(
    host: str,
    port: int,
    raw: bytes,
    marker: bytes,
    deadline: float,
    settings: LoadSettings,
    out: dict[str, list],
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
                status, body = await asyncio.wait_for(_read_response(reader), settings.timeout_s)
            except (TimeoutError, asyncio.IncompleteReadError, OSError):
                out["socket_errors"].append(1)
                return
            out["latency"].append(time.perf_counter() - start)
            if status != 200:
                out["non200"].append(status)
            if marker and marker in body:
                out["marked"].append(1)
            if not settings.keepalive:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def _run(target: Target, settings: LoadSettings, duration_s: float) -> LoadResult:
    """Drive `settings.connections` connections for duration_s seconds."""
    host, port, raw = _address(target, settings.keepalive)
    marker = target.marker.encode()
    out: dict[str, list] = {"latency": [], "non200": [], "socket_errors": [], "marked": []}
    start = time.perf_counter()
    deadline = start + duration_s
    tasks = [
        _connection(host, port, raw, marker, deadline, settings, out)
        for _ in range(settings.connections)
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.perf_counter() - start
    p50, p99 = _percentiles(out["latency"], [50, 99])
    return LoadResult(
        requests=len(out["latency"]),
        duration_s=elapsed,
        p50_ms=p50,
        p99_ms=p99,
        max_ms=max(out["latency"], default=0.0) * 1e3,
        non200=len(out["non200"]),
        socket_errors=len(out["socket_errors"]) + sum(isinstance(r, Exception) for r in results),
        generator="python",
        marked=len(out["marked"]),
    )


def run(target: Target, settings: LoadSettings, duration_s: float) -> LoadResult:
    """Measure target for duration_s seconds with the asyncio generator (closed loop)."""
    return asyncio.run(_run(target, settings, duration_s))


# --- open loop --------------------------------------------------------------------------


class _Conn:
    """One keep-alive connection of the paced pool, opened on first use and after errors."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, timeout_s: float) -> None:
        """(Re)open the connection if it is not open."""
        if self.writer is None or self.reader is None or self.reader.at_eof():
            self.close()  # the server closes idle keep-alive connections after a while
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), timeout_s
            )

    @property
    def local_port(self) -> int | None:
        return self.writer.get_extra_info("sockname")[1] if self.writer else None

    async def exchange(self, raw: bytes, timeout_s: float) -> tuple[float, int, bytes]:
        """Send one request; return the time it left, the status and the body."""
        await self.connect(timeout_s)
        assert self.reader is not None
        sent = time.monotonic()
        self.writer.write(raw)
        status, body = await asyncio.wait_for(_read_response(self.reader), timeout_s)
        return sent, status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _paced_one(
    conn: _Conn,
    idle: asyncio.Queue[_Conn],
    raw: bytes,
    scheduled: float,
    timeout_s: float,
    out: dict[str, list],
) -> None:
    """One scheduled request; its connection goes back to the pool whatever happens."""
    try:
        sent, status, body = await conn.exchange(raw, timeout_s)
        done = time.monotonic()
    except (TimeoutError, asyncio.IncompleteReadError, OSError, ValueError):
        out["socket_errors"].append(1)
        conn.close()  # a late answer must not be read as the next request's
        return
    finally:
        idle.put_nowait(conn)
    out["latency"].append(done - scheduled)
    out["scheduled"].append(scheduled)
    out["lag"].append(sent - scheduled)
    if status != 200:
        out["non200"].append(status)
    if out["bodies"] is not None:
        out["bodies"].append(body)


async def _balance(pool: list[_Conn], port: int, timeout_s: float, tries: int = 60) -> None:
    """Open every connection of the pool, then reopen some until each server process holds
    as many of them as any other, within one.

    The pool shares the load evenly over its connections, so a process holding 6 of 8 would
    get three times the requests of the other: its latency, and the run's, would follow the
    kernel's hash of the client ports more than anything measured (bench/README.md).
    """
    for conn in pool:
        await conn.connect(timeout_s)
    for _ in range(tries):
        listeners, owners = await asyncio.to_thread(socket_owners, port)
        if len(listeners) < 2:
            return  # one process (or unknown): nothing to balance
        held: dict[int, list[_Conn]] = {pid: [] for pid in listeners}
        for conn in pool:
            held.setdefault(owners.get(conn.local_port or 0, 0), []).append(conn)
        counts = sorted((len(conns), pid) for pid, conns in held.items() if pid in listeners)
        if counts[-1][0] - counts[0][0] <= 1:
            return
        moved = held[counts[-1][1]][0]
        moved.close()
        await moved.connect(timeout_s)


async def _paced(
    target: Target,
    rate: float,
    duration_s: float,
    connections: int,
    timeout_s: float,
    keep_bodies: bool,
    balance: bool,
) -> PacedResult:
    """Schedule `rate * duration_s` requests at fixed intervals over a pool of connections.

    Each request takes the connection idle longest (so all of them, and the server processes
    they landed on, share the traffic); when none is idle it waits for one, and that wait
    counts in its latency, as it would for a user who sent it at the scheduled time. With
    `balance`, the connections are spread evenly over the server's processes first.
    """
    host, port, raw = _address(target, keepalive=True)
    pool = [_Conn(host, port) for _ in range(connections)]
    if balance:
        await _balance(pool, port, timeout_s)
    idle: asyncio.Queue[_Conn] = asyncio.Queue()
    for conn in pool:
        idle.put_nowait(conn)
    out: dict[str, list] = {
        "latency": [],
        "scheduled": [],
        "lag": [],
        "non200": [],
        "socket_errors": [],
    }
    out["bodies"] = [] if keep_bodies else None  # type: ignore[assignment]
    total = min(MAX_REQUESTS, max(1, round(rate * duration_s)))
    pending: set[asyncio.Task] = set()
    start = time.monotonic() + 0.01
    late = 0.0
    stalls: list[tuple[float, float]] = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness = time.monotonic() - scheduled  # this loop's own
        late = max(late, lateness)
        if lateness * 1e3 > GENERATOR_EVENT_MS:
            stalls.append((scheduled, lateness * 1e3))
        conn = await idle.get()
        task = asyncio.create_task(_paced_one(conn, idle, raw, scheduled, timeout_s, out))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=timeout_s + 5)
    elapsed = time.monotonic() - start
    while not idle.empty():
        idle.get_nowait().close()
    p50, p95, p99 = _percentiles(out["latency"], [50, 95, 99])
    (lag99,) = _percentiles(out["lag"], [99])
    return PacedResult(
        rate=rate,
        scheduled=total,
        requests=len(out["latency"]),
        duration_s=elapsed,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        max_ms=max(out["latency"], default=0.0) * 1e3,
        lag_p99_ms=lag99,
        generator_late_ms=late * 1e3,
        non200=len(out["non200"]),
        socket_errors=len(out["socket_errors"]),
        bodies=tuple(out["bodies"] or ()),
        latencies_ms=tuple(v * 1e3 for v in out["latency"]),
        scheduled_at=tuple(out["scheduled"]),
        generator_stalls=tuple(stalls),
    )


def run_paced(
    target: Target,
    rate: float,
    duration_s: float,
    connections: int = 8,
    timeout_s: float = 5.0,
    keep_bodies: bool = False,
    balance: bool = False,
) -> PacedResult:
    """Send `rate` requests per second for duration_s seconds (open loop), keep-alive; with
    `balance`, over connections spread evenly over the server's processes."""
    if not (0 < rate <= 100_000 and 0 < duration_s <= 600 and 1 <= connections <= 1024):
        raise ValueError("need 0 < rate <= 100000, 0 < duration <= 600 s, 1-1024 connections")
    return asyncio.run(
        _paced(target, rate, duration_s, connections, timeout_s, keep_bodies, balance)
    )
