"""What a load run is given (target, settings) and what it returns (result)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass(frozen=True)
class Target:
    """One POST endpoint to load: URL, JSON body and headers.

    With a `marker`, the load generator counts the answers whose body contains it.
    """

    url: str
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    marker: str = ""


@dataclass(frozen=True)
class LoadSettings:
    """How hard and how long to load; identical for every server."""

    connections: int = 16
    duration_s: float = 10.0
    warmup_s: float = 2.0
    threads: int = 1
    timeout_s: float = 5.0
    keepalive: bool = True


@dataclass(frozen=True)
class LoadResult:
    """What one measured run saw."""

    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non200: int
    socket_errors: int
    generator: str
    server_cpu_s: float = 0.0
    generator_cpu_s: float = 0.0
    host_busy_s: float = 0.0
    services_cpu_s: float = 0.0  # PostgreSQL and Redis processes (cpu.SERVICES)
    connection_spread: tuple[int, ...] = ()  # connections per server process, mid-run
    marked: int = 0  # answers whose body contains the target's marker

    @property
    def rps(self) -> float:
        """Completed requests per second (any status)."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        """Non-200 answers plus connection, read, write and timeout errors."""
        return self.non200 + self.socket_errors

    @property
    def server_cpu_ms_per_request(self) -> float:
        """Server CPU time (all its processes) per completed request."""
        return 1e3 * self.server_cpu_s / self.requests if self.requests else 0.0

    @property
    def other_cpu_cores(self) -> float:
        """Cores busy with anything but the server's processes and the load generator."""
        other = self.host_busy_s - self.server_cpu_s - self.generator_cpu_s
        return max(0.0, other) / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain dict for JSON output, with the derived figures."""
        return {
            **asdict(self),
            "rps": round(self.rps, 1),
            "errors": self.errors,
            "server_cpu_ms_per_request": round(self.server_cpu_ms_per_request, 3),
            "other_cpu_cores": round(self.other_cpu_cores, 2),
        }


@dataclass(frozen=True)
class PacedResult:
    """What one open-loop run at a fixed request rate saw.

    Latency counts from each request's scheduled send time, so time a request spent waiting
    for a free connection (the server was still busy with earlier ones) is included.
    """

    rate: float  # requests per second scheduled
    scheduled: int
    requests: int
    duration_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    lag_p99_ms: float  # how late requests left after their scheduled time, 99th percentile
    # how late the generator's own loop was for a request at most, before it waited for a
    # free connection (a stall of the generator, not of the server)
    generator_late_ms: float
    non200: int
    socket_errors: int
    bodies: tuple[bytes, ...] = field(default=(), repr=False)  # only when asked for
    latencies_ms: tuple[float, ...] = field(default=(), repr=False)  # every answered request
    # when each of them was scheduled (time.monotonic()), in the same order
    scheduled_at: tuple[float, ...] = field(default=(), repr=False)
    server_cpu_s: float = 0.0
    generator_cpu_s: float = 0.0
    host_busy_s: float = 0.0
    services_cpu_s: float = 0.0  # PostgreSQL and Redis processes (cpu.SERVICES)
    connection_spread: tuple[int, ...] = ()  # connections per server process, mid-run
    host_stall_ms: float | None = None  # longest host stall while measured (hoststall.py)
    host_watch: str = ""  # the priority the host-stall canary ran at: realtime or normal
    # (scheduled time, ms late) of each request the generator's loop was more than
    # pyloadgen.GENERATOR_EVENT_MS late for; the same for the canary's stalls (time they ended, ms)
    generator_stalls: tuple[tuple[float, float], ...] = field(default=(), repr=False)
    host_stalls: tuple[tuple[float, float], ...] = field(default=(), repr=False)

    @property
    def errors(self) -> int:
        """Non-200 answers plus requests never answered (connection errors, timeouts)."""
        return self.non200 + self.scheduled - self.requests

    @property
    def server_cpu_ms_per_request(self) -> float:
        """Server CPU time (all its processes) per completed request."""
        return 1e3 * self.server_cpu_s / self.requests if self.requests else 0.0

    @property
    def other_cpu_cores(self) -> float:
        """Cores busy with anything but the server's processes and the load generator."""
        other = self.host_busy_s - self.server_cpu_s - self.generator_cpu_s
        return max(0.0, other) / self.duration_s if self.duration_s else 0.0

    @property
    def outside_cpu_cores(self) -> float:
        """Cores busy with what the benchmark does not run: `other_cpu_cores` without the
        PostgreSQL and Redis processes (part of the system measured on production)."""
        other = self.host_busy_s - self.server_cpu_s - self.generator_cpu_s - self.services_cpu_s
        return max(0.0, other) / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain dict for JSON output (without bodies and latencies), with the derived figures."""
        out = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("bodies", "latencies_ms", "scheduled_at")
        }
        return {
            **out,
            "errors": self.errors,
            "server_cpu_ms_per_request": round(self.server_cpu_ms_per_request, 3),
            "other_cpu_cores": round(self.other_cpu_cores, 2),
            "outside_cpu_cores": round(self.outside_cpu_cores, 2),
        }
