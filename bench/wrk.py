"""Run wrk with the Lua script `wrk_post.lua` and parse its one-line JSON summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from bench.loadtypes import LoadResult, LoadSettings, Target

LUA_SCRIPT = Path(__file__).with_name("wrk_post.lua")
RESULT_PREFIX = "BENCH_RESULT "


def ensure_wrk() -> str | None:
    """Return the wrk binary, installing Debian's package if possible; None if unavailable."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        try:
            subprocess.run(cmd, capture_output=True, timeout=300, check=True)
        except (subprocess.SubprocessError, OSError):
            return None
    return shutil.which("wrk")


def run_wrk(wrk: str, target: Target, settings: LoadSettings, duration_s: float) -> LoadResult:
    """Run wrk once against target for duration_s seconds and parse the Lua summary."""
    env = {
        "BENCH_BODY": target.body,
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in target.headers.items()),
        "BENCH_MARKER": target.marker,
    }
    return run_script(wrk, LUA_SCRIPT, target.url, env, settings, duration_s)


def run_script(
    wrk: str, script: Path, url: str, env: dict[str, str], settings: LoadSettings, duration_s: float
) -> LoadResult:
    """Run wrk with a Lua script that prints the summary line; ``env`` adds to the environment."""
    cmd = [
        wrk,
        f"-t{settings.threads}",
        f"-c{settings.connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(settings.timeout_s))}s",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(
        cmd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=False,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    raw = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return LoadResult(
        requests=raw["requests"],
        duration_s=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        max_ms=raw["max_us"] / 1e3,
        non200=raw["non200"],
        socket_errors=raw["socket_errors"],
        generator="wrk",
        marked=raw.get("marked", 0),
    )
