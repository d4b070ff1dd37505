"""Render benchmark results as a compact table or as JSON."""

from __future__ import annotations

import json
from typing import Any

from bench.loadgen import LoadResult, LoadSettings

SERVERS = ("reference", "ours")
Results = dict[str, dict[str, list[LoadResult]]]  # profile -> server -> one result per round


def median_round(rounds: list[LoadResult]) -> LoadResult:
    """The round with the median throughput (the lower middle one for an even count)."""
    return sorted(rounds, key=lambda r: r.rps)[(len(rounds) - 1) // 2]


def _shown(results: Results) -> dict[str, dict[str, LoadResult]]:
    """One representative result per profile and server."""
    return {p: {s: median_round(r) for s, r in by.items() if r} for p, by in results.items()}


def ratios(reference: LoadResult, ours: LoadResult) -> dict[str, float | None]:
    """Ours relative to the reference: throughput and latency ratios."""

    def div(a: float, b: float) -> float | None:
        return round(a / b, 3) if b else None

    return {
        "rps_ours_over_reference": div(ours.rps, reference.rps),
        "p50_ours_over_reference": div(ours.p50_ms, reference.p50_ms),
        "p99_ours_over_reference": div(ours.p99_ms, reference.p99_ms),
        "cpu_per_request_ours_over_reference": div(
            ours.server_cpu_ms_per_request, reference.server_cpu_ms_per_request
        ),
    }


def as_json(settings: LoadSettings, results: Results) -> str:
    """Machine-readable results: settings, then per profile each server, its rounds, ratios."""
    out: dict[str, Any] = {"settings": vars(settings), "profiles": {}}
    for profile, by_server in _shown(results).items():
        entry: dict[str, Any] = {}
        for server in SERVERS:
            if server in by_server:
                rounds = [r.as_dict() for r in results[profile][server]]
                entry[server] = {**by_server[server].as_dict(), "rounds": rounds}
        if all(s in by_server for s in SERVERS):
            entry["ratios"] = ratios(by_server["reference"], by_server["ours"])
        out["profiles"][profile] = entry
    return json.dumps(out, indent=2)


def as_table(settings: LoadSettings, results: Results) -> str:
    """Compact fixed-width table, one line per server and one ratio line per profile."""
    rounds = max((len(r) for by in results.values() for r in by.values()), default=1)
    lines = [
        f"POST predict, {settings.connections} connections, {settings.duration_s:g}s "
        f"after {settings.warmup_s:g}s warm-up, {settings.threads} load thread(s), "
        f"keep-alive {'on' if settings.keepalive else 'off'}"
        + (f", median of {rounds} rounds by req/s" if rounds > 1 else ""),
        f"{'profile':<11}{'server':<11}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'cpu ms/req':>11}{'requests':>10}{'errors':>8}{'other cpu':>10}  conns/process",
    ]
    for profile, by_server in _shown(results).items():
        for server in SERVERS:
            if server in by_server:
                r = by_server[server]
                lines.append(
                    f"{profile:<11}{server:<11}{r.rps:>9.1f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
                    f"{r.server_cpu_ms_per_request:>11.2f}{r.requests:>10}{r.errors:>8}"
                    f"{r.other_cpu_cores:>10.2f}  {'+'.join(map(str, r.connection_spread)) or '?'}"
                )
        if all(s in by_server for s in SERVERS):
            q = ratios(by_server["reference"], by_server["ours"])
            lines.append(
                f"{profile:<11}{'ours/ref':<11}{_x(q['rps_ours_over_reference']):>9}"
                f"{_x(q['p50_ours_over_reference']):>9}{_x(q['p99_ours_over_reference']):>9}"
                f"{_x(q['cpu_per_request_ours_over_reference']):>11}"
            )
    return "\n".join(lines)


def _x(value: float | None) -> str:
    """A ratio as '0.42x', or '-' when undefined."""
    return "-" if value is None else f"{value:.2f}x"
