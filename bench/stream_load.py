"""POST /api/v1/predict latency with many Server-Sent Event streams held open, versus none.

One server, one run: /predict is loaded closed-loop (as pipeline.py does) first with no
stream open, then while `--streams` clients hold streams open, and the p99 latencies are
compared (target: at most 1.5x). `--kind events` (the default): batch-job event streams of a job
that stays queued (the server runs without its background worker, in both phases).
`--kind predict`: POST /predict/stream streams of many rows whose clients stop reading after the
first prediction, so that the server waits in a write to each of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

if __package__ in (None, ""):  # run as a script: make `bench` importable from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cpu, platform_setup
from bench.loadgen import LoadResult, LoadSettings, measure_server
from bench.servers import Server, connection_spread, free_port

ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps({"input_data": [5.1, 3.5, 1.4, 0.2], "model": "iris", "model_version": "v1"})
TARGET_RATIO = 1.5
SLOT_RELEASE_WAIT_S = 2.0
STREAM_ROWS = 1000  # rows of each held prediction stream (MAX_STREAM_ROWS as shipped)
# A held prediction stream's client announces Ethernet's segment size and a small receive
# buffer, as a client across a network would: over loopback (64 KB segments) Linux would grow
# the server's send buffer to megabytes, more than a whole stream, and the server would finish
# every stream into its buffers instead of waiting for the client. Like this, the buffers fill
# after about 300 rows.
HELD_MSS = 1400
HELD_RCVBUF = 4096
HELD_SPACING_S = 0.1  # between the starts of two held prediction streams
IDLE_CORES = 0.05  # the server's CPU use below which the held prediction streams are waiting
KINDS = {"events": "event streams", "predict": "stalled prediction streams"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profile", choices=("embedded", "production"), default="embedded")
    p.add_argument(
        "--kind",
        choices=("events", "predict"),
        default="events",
        help="streams held: batch job events (a queued job), or prediction streams whose "
        "clients stop reading",
    )
    p.add_argument("--streams", type=int, default=100, help="streams held open")
    p.add_argument("--connections", type=int, default=16, help="/predict load connections")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, default=2.0, help="discarded seconds per phase")
    p.add_argument("--rounds", type=int, default=1, help="(none, streams) pairs; medians shown")
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the server, e.g. DB_CONN_MAX_AGE=0 (repeatable)",
    )
    p.add_argument("--quiet-wait", type=float, default=30.0, help="max wait for an idle host")
    p.add_argument("--redis-db", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not (1 <= args.streams <= 1000 and 1 <= args.rounds <= 10 and 0 < args.duration <= 120):
        p.error("need 1-1000 streams, 1-10 rounds and a duration of at most 120 s")
    return args


# --- streams held open --------------------------------------------------------------------


@dataclass
class Holder:
    """Holds `count` event streams open on a thread of its own (asyncio, raw HTTP/1.1).

    With a `body`, each stream is a POST of it; with `stall`, each client stops reading after
    the first prediction (its socket buffers small, see HELD_MSS), so the server fills the
    buffers and then waits in a write until the client leaves.
    """

    url: str
    headers: dict[str, str]
    count: int
    body: bytes = b""
    stall: bool = False
    spacing_s: float = 0.0  # between two streams' starts
    opened: int = 0
    failed: list[str] = field(default_factory=list)
    ended: int = 0  # streams the server closed while held
    events: int = 0
    heartbeats: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self, timeout_s: float = 30.0) -> None:
        """Open every stream and wait (at most timeout_s) until each has sent its first event.

        A server that cannot serve them all leaves the rest waiting: `opened` tells how many
        were served, and the phase is measured anyway (that is the point of the comparison).
        """
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(timeout_s)
        if self.failed:
            raise RuntimeError(f"{len(self.failed)} streams failed: {self.failed[:3]}")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks = []
        for _ in range(self.count):
            tasks.append(asyncio.create_task(self._one()))
            await asyncio.sleep(self.spacing_s)
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connect(self, host: str, port: int):
        if not self.stall:
            return await asyncio.open_connection(host, port)
        sock = socket.socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, HELD_MSS)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, HELD_RCVBUF)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        # A small read buffer here too: asyncio stops reading the socket past twice the limit.
        return await asyncio.open_connection(sock=sock, limit=HELD_RCVBUF)

    async def _one(self) -> None:
        parts = requests.utils.urlparse(self.url)
        try:
            reader, writer = await asyncio.wait_for(self._connect(parts.hostname, parts.port), 30)
        except (OSError, TimeoutError) as exc:
            self._fail(f"connect: {exc}")
            return
        head = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        method = "POST" if self.body else "GET"
        if self.body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
        writer.write(
            f"{method} {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}"
            "Accept: text/event-stream\r\n\r\n".encode()
            + self.body
        )
        try:
            status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            if b" 200 " not in status.split(b"\r\n", 1)[0]:
                self._fail(status.split(b"\r\n", 1)[0].decode())
                return
            first = True
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    self.ended += 1
                    return
                self.events += chunk.count(b"event: ")
                self.heartbeats += chunk.count(b": keep-alive")
                if first and b"event: " in chunk:
                    first = False
                    self.opened += 1
                    if self.opened == self.count:
                        self._ready.set()
                if self.stall and b"event: prediction" in chunk:
                    assert self._stop is not None
                    await self._stop.wait()  # read no more: the server waits to write
                    return
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self._fail(f"read: {exc!r}")
        finally:
            writer.close()

    def _fail(self, reason: str) -> None:
        self.failed.append(reason)
        self._ready.set()


# --- the server ---------------------------------------------------------------------------


@contextlib.contextmanager
def serving(
    instance: platform_setup.Instance, log: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[Server, int]]:
    """`manage.py serve --no-worker` (a submitted job stays queued) on a free port, rate limits
    off."""
    port = free_port()
    cmd = [*platform_setup.serve_command(port), "--no-worker"]
    # Measure serving, not the rate limiter: its counters would refuse the load after a second.
    # Plain HTTP on localhost: no HTTPS redirect on the production profile.
    env = {**instance.env, "RATELIMIT_ENABLE": "0", "SECURE_SSL_REDIRECT": "0", **(extra_env or {})}
    server = Server("platform", cmd, env, ROOT, log)
    try:
        server.start()
        server.wait_healthy(f"http://127.0.0.1:{port}/health", timeout_s=120)
        yield server, port
    finally:
        server.stop()


def stream_key(instance: platform_setup.Instance) -> str:
    out = platform_setup.manage(
        instance.env, "createapikey", "demo", "--scopes", "predict,stream,read,batch"
    )
    return out.strip().splitlines()[-1]


def check_stream(base: str, key: str) -> None:
    """A prediction stream over HTTP: events in order, each prediction stored and readable."""
    response = requests.post(
        f"{base}/api/v1/predict/stream",
        json={"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], "model": "iris"},
        headers={"X-API-Key": key},
        stream=True,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    names, ids = [], []
    for line in response.iter_lines():
        if line.startswith(b"event: "):
            names.append(line[7:].decode())
        elif line.startswith(b"data: ") and names[-1] == "prediction":
            ids.append(json.loads(line[6:])["prediction_id"])
    expected = ["started", "prediction", "progress", "prediction", "progress", "completed"]
    if names != expected or len(ids) != 2:
        raise RuntimeError(f"prediction stream sent {names}")
    for prediction_id in ids:
        read = requests.get(
            f"{base}/api/v1/predict/{prediction_id}", headers={"X-API-Key": key}, timeout=10
        )
        if read.status_code != 200:
            raise RuntimeError(f"streamed prediction {prediction_id} not stored")


def wait_until_idle(pgid: int | None, max_wait_s: float) -> float:
    """Wait (at most max_wait_s) until the server's processes use almost no CPU; return the
    cores they used in the last second: held prediction streams first compute rows until their
    clients' buffers are full."""
    deadline = time.monotonic() + max_wait_s
    while True:
        start = cpu.group_seconds(pgid)
        time.sleep(1.0)
        busy = cpu.group_seconds(pgid) - start
        if busy <= IDLE_CORES or time.monotonic() >= deadline:
            return busy


def queued_job(base: str, key: str) -> str:
    response = requests.post(
        f"{base}/api/v1/predict/batch",
        json={"inputs": [[5.1, 3.5, 1.4, 0.2]] * 10, "model": "iris"},
        headers={"X-API-Key": key},
        timeout=30,
    )
    if response.status_code != 202:
        raise RuntimeError(f"batch submit: {response.status_code} {response.text}")
    return response.json()["job_id"]


def held_streams_of(kind: str, base: str, key: str, count: int) -> Callable[[], Holder]:
    """What each round holds open: a queued job's event streams, or stalled prediction streams."""
    if kind == "events":
        url = f"{base}/api/v1/predict/batch/{queued_job(base, key)}/events"
        return lambda: Holder(url, {"X-API-Key": key}, count)
    body = json.dumps(
        {"inputs": [[5.1, 3.5, 1.4, 0.2]] * STREAM_ROWS, "model": "iris", "model_version": "v2"}
    ).encode()
    url = f"{base}/api/v1/predict/stream"
    # Clients arrive one after the other, not all in the same instant: a hundred streams
    # starting at once would measure a burst of arrivals (each computing its rows until its
    # buffers fill), not streams held open.
    return lambda: Holder(
        url, {"X-API-Key": key}, count, body=body, stall=True, spacing_s=HELD_SPACING_S
    )


@dataclass
class Phase:
    name: str
    result: LoadResult
    streams_open: int = 0
    streams_lost: int = 0
    stream_events: int = 0
    conns: tuple[int, ...] = ()


def run(args: argparse.Namespace) -> tuple[list[Phase], dict]:
    settings = LoadSettings(
        connections=args.connections, duration_s=args.duration, warmup_s=args.warmup
    )
    logs = Path(tempfile.mkdtemp(prefix="stream-load-logs-"))
    phases: list[Phase] = []
    with platform_setup.instance(args.profile, args.redis_db) as instance:
        key = stream_key(instance)
        extra = dict(item.split("=", 1) for item in args.env)
        with serving(instance, logs / "serve.log", extra) as (server, port):
            base = f"http://127.0.0.1:{port}"
            target = platform_setup.Running(server, port).predict_target(key, BODY)
            check_stream(base, key)
            held_streams = held_streams_of(args.kind, base, key, args.streams)
            for _ in range(args.rounds):
                cpu.settle(args.quiet_wait)
                none = measure_server(target, settings, args.generator, server.pgid, port)
                phases.append(Phase("none", none))
                holder = held_streams()
                try:
                    holder.start()
                    if holder.stall:
                        busy = wait_until_idle(server.pgid, max_wait_s=300)
                        if busy > IDLE_CORES:
                            print(f"warning: server still busy ({busy:.2f} cores)", file=sys.stderr)
                    time.sleep(1.0)
                    cpu.settle(args.quiet_wait / 3)
                    held = measure_server(target, settings, args.generator, server.pgid, port)
                    spread = connection_spread(port)
                    phases.append(
                        Phase(
                            f"{args.streams} streams",
                            held,
                            streams_open=holder.opened - holder.ended,
                            streams_lost=holder.ended + len(holder.failed),
                            stream_events=holder.events + holder.heartbeats,
                            conns=spread,
                        )
                    )
                finally:
                    holder.stop()
                # The server notices within a poll (0.5 s) that the clients left, or at once
                # when its write to them fails, and frees their slots: the next round must find
                # every slot free again.
                time.sleep(SLOT_RELEASE_WAIT_S)
    shutil.rmtree(logs, ignore_errors=True)
    summary = summarize(phases, args)
    return phases, summary


def summarize(phases: list[Phase], args: argparse.Namespace) -> dict:
    held_phases = [p for p in phases if p.name != "none"]
    none = [p.result for p in phases if p.name == "none"]
    held = [p.result for p in held_phases]
    p99_none = statistics.median(r.p99_ms for r in none)
    p99_held = statistics.median(r.p99_ms for r in held)
    served = all(r.requests for r in held)
    ratio = p99_held / p99_none if p99_none and served else float("inf")
    return {
        "p99_none_ms": round(p99_none, 2),
        "p99_streams_ms": round(p99_held, 2),
        "ratio": round(ratio, 2),
        "rps_ratio": round(
            statistics.median(r.rps for r in held) / statistics.median(r.rps for r in none), 2
        ),
        "met": ratio <= TARGET_RATIO
        and all(p.streams_lost == 0 and p.streams_open == args.streams for p in held_phases)
        and all(r.errors == 0 for r in none + held),
    }


def table(phases: list[Phase], summary: dict, args: argparse.Namespace) -> str:
    lines = [
        f"POST predict while {KINDS[args.kind]} are held open: {args.connections} connections, "
        f"{args.duration:g}s after {args.warmup:g}s warm-up, profile {args.profile}, "
        f"{''.join(' ' + e for e in args.env)}",
        f"{'phase':<12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'cpu ms/req':>10} {'errors':>6} {'other cpu':>9} {'streams open':>12} "
        f"{'lost':>4}  conns/process",
    ]
    for p in phases:
        r = p.result
        open_ = str(p.streams_open) if p.name != "none" else "-"
        lines.append(
            f"{p.name:<12} {r.rps:8.1f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.max_ms:8.1f} "
            f"{r.server_cpu_ms_per_request:10.2f} {r.errors:6d} {r.other_cpu_cores:9.2f} "
            f"{open_:>12} {p.streams_lost:4d}  {'+'.join(map(str, p.conns or r.connection_spread))}"
        )
    verdict = "met" if summary["met"] else "NOT met"
    lines.append(
        f"p99 with streams / without: {summary['p99_streams_ms']} / {summary['p99_none_ms']} ms "
        f"= {summary['ratio']}x (target <= {TARGET_RATIO:g}x, no stream lost, no error): "
        f"{verdict}; req/s ratio {summary['rps_ratio']}x"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        phases, summary = run(args)
    except (platform_setup.SetupError, RuntimeError, OSError, AssertionError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(
            json.dumps(
                {
                    "phases": [
                        {
                            "phase": p.name,
                            **p.result.as_dict(),
                            "streams_open": p.streams_open,
                            "streams_lost": p.streams_lost,
                        }
                        for p in phases
                    ],
                    "kind": args.kind,
                    **summary,
                },
                indent=2,
            )
        )
    else:
        print(table(phases, summary, args))
    return 0 if summary["met"] else 2


if __name__ == "__main__":
    sys.exit(main())
