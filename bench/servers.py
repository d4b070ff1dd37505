"""Start a server process in its own process group, wait until healthy, stop it cleanly."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import requests


def free_port() -> int:
    """Ask the kernel for a free TCP port on the loopback address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One server process (and its children) started for a benchmark."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, log: Path):
        self.name, self.cmd, self.env, self.cwd, self.log = name, cmd, env, cwd, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch the process in a new session so its whole group can be stopped."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pgid(self) -> int | None:
        """Process group of the server and its children (the leader's pid), while running."""
        return self.proc.pid if self.proc is not None else None

    def wait_healthy(self, url: str, timeout_s: float = 60.0) -> None:
        """Poll GET url until it answers 200; fail if the process exits or time runs out."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.tail()}")
            try:
                resp = requests.get(url, timeout=2)
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except requests.RequestException as exc:
                last = str(exc)
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not healthy in {timeout_s:.0f}s ({last}): {self.tail()}")

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGINT and wait; then SIGTERM, then SIGKILL the process group if anything is left."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # leader of its own session, so pid == pgid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if not _group_alive(pgid):
                break
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
        if self.proc.poll() is None:
            self.proc.wait(5)
        self.proc = None

    def tail(self, chars: int = 2000) -> str:
        """Last lines of the server log, for error messages."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def connection_spread(port: int) -> tuple[int, ...]:
    """Established connections to `port` per server process, most first (empty if unknown)."""
    cmd = ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    counts = Counter(re.findall(r"pid=(\d+)", out))
    return tuple(sorted(counts.values(), reverse=True))


def socket_owners(port: int) -> tuple[set[int], dict[int, int]]:
    """The processes listening on `port`, and which of them holds each connection to it.

    Returns (listener pids, {client port: pid}); both empty if `ss` cannot tell. With
    SO_REUSEPORT every worker has a listener of its own and the kernel hashes each new
    connection to one of them.
    """
    listening = ["ss", "-tlnpH", f"( sport = :{port} )"]
    established = ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"]
    try:
        runs = [
            subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout
            for cmd in (listening, established)
        ]
    except (OSError, subprocess.SubprocessError):
        return set(), {}
    listeners = {int(pid) for pid in re.findall(r"pid=(\d+)", runs[0])}
    # "0 0 127.0.0.1:8000 127.0.0.1:51234 users:(("python",pid=42,fd=9))"
    held = re.findall(r"\S+:\d+\s+\S+:(\d+)\s+users:\(\(\"[^\"]*\",pid=(\d+)", runs[1])
    owners = {int(client): int(pid) for client, pid in held}
    return listeners, owners


class SpreadSampler:
    """Samples connection_spread once, `delay_s` after start(), on a timer thread."""

    def __init__(self, port: int, delay_s: float) -> None:
        self.port = port
        self.value: tuple[int, ...] = ()
        self._timer = threading.Timer(delay_s, self._sample)
        self._timer.daemon = True

    def _sample(self) -> None:
        self.value = connection_spread(self.port)

    def start(self) -> None:
        """Arm the timer."""
        self._timer.start()

    def stop(self) -> tuple[int, ...]:
        """Disarm the timer if it has not fired; return what was sampled."""
        self._timer.cancel()
        return self.value


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still exists (zombies of our child count as gone)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also succeeds while only an unreaped zombie is left, so look for a live member.
    return _live_member(pgid)


def _live_member(pgid: int) -> bool:
    """Whether a live (non-zombie) process belongs to the group, read from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False
