"""Time a batch job over HTTP (1,000,000 CSV rows by default; ``--format npy --rows 10000000``
for the large case) against the tutorial's per-row Python loop over the same rows."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import requests

if __package__ in (None, ""):  # run as a script: make `bench` importable from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cpu, platform_setup
from predictions.runtime.datasets import load_dataset
from predictions.runtime.outputs import describe
from predictions.runtime.predictors import Predictor, load_predictor
from predictions.runtime.training import train_demo_models

PY_SPY = Path(sys.executable).with_name("py-spy")
# Rows per second end to end, by upload format and profile, and of the CSV download.
TARGET_ROWS_PER_S = {
    ("npy", "embedded"): 1_000_000,
    ("npy", "production"): 700_000,
    ("csv", "embedded"): 800_000,
    ("csv", "production"): 800_000,
}
TARGET_CSV_DOWNLOAD_ROWS_PER_S = 1_000_000
TARGET_LOOP_RATIO = 3.0
TARGET_PEAK_MB = 600
TOLERANCE = 1e-5
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
NOISE_SD = 0.05  # centimetres of noise added to each sampled iris measurement


class CheckError(RuntimeError):
    """The job failed, or its results differ from a direct computation."""


@dataclass(frozen=True)
class Rows:
    """The generated rows as the uploaded file (CSV or NPY), their values, and the outputs
    computed directly with the runtime."""

    path: Path
    data: bytes
    values: np.ndarray
    expected: np.ndarray
    labels: tuple[str, ...]
    predictor: Predictor


@dataclass(frozen=True)
class LoopResult:
    """The tutorial's per-row loop over the same CSV, in this process."""

    rows: int
    seconds: float
    max_error: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


@dataclass
class JobResult:
    """One batch job on one profile: phase times (s), memory (MB), CPU (s) and checks."""

    profile: str
    format: str
    rows: int
    end_to_end_s: float
    upload_s: float  # submit start -> 202 (client encoding, upload, parse, validate, store)
    queue_s: float  # 202 -> started_at (broker poll, hand-out to a worker)
    processing_s: float  # started_at -> finished_at (in the worker)
    notice_s: float  # finished_at -> the poll that saw "completed"
    npy_s: float
    csv_s: float
    npy_mb: float
    csv_mb: float
    worker_peak_mb: float  # highest VmRSS of any one qcluster process
    worker_sum_mb: float  # highest sum of VmRSS over the qcluster processes (shared pages twice)
    worker_pss_mb: float  # highest sum of Pss over the qcluster processes (shared pages split)
    worker_hwm_mb: float  # highest VmHWM of the qcluster processes after the job
    web_peak_mb: float  # highest VmRSS of any one web process, downloads included
    web_cpu_s: float  # CPU of the web processes from submit to completed
    worker_cpu_s: float  # CPU of the qcluster processes from submit to completed
    services_cpu_s: float  # CPU of every PostgreSQL and Redis process on the host then
    other_cpu_s: float  # the rest of the host's CPU then: interference by other jobs
    max_error: float
    polls: int  # status requests sent
    samples: int  # memory samples taken
    hwm_by_process: dict[str, float] = field(default_factory=dict)  # pid -> VmHWM, qcluster only

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.end_to_end_s

    @property
    def worker_max_mb(self) -> float:
        """Peak memory of one qcluster process: sampled VmRSS, or VmHWM if a sample missed it."""
        return max(self.worker_peak_mb, self.worker_hwm_mb)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profile", choices=("embedded", "production", "both"), default="embedded")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the job")
    p.add_argument("--format", choices=("csv", "npy"), default="csv", help="the uploaded file")
    p.add_argument(
        "--loop-rows",
        type=int,
        default=1_000_000,
        help="rows the per-row loop is timed on (its rate does not depend on the job's size)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated rows")
    p.add_argument("--poll", type=float, default=0.05, help="seconds between status polls")
    p.add_argument("--sample", type=float, default=0.05, help="seconds between RSS samples")
    p.add_argument("--timeout", type=float, default=600.0, help="most seconds to wait for a job")
    p.add_argument(
        "--quiet-wait", type=float, default=60.0, help="max seconds to wait for an idle host"
    )
    p.add_argument("--redis-db", type=int, default=5, help="Redis db number for production")
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="record raw py-spy profiles of the web and qcluster processes into DIR",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if not 1 <= args.rows <= 20_000_000:
        p.error("--rows must be between 1 and 20,000,000 (the platform's MAX_BATCH_ROWS)")
    if not (0.05 <= args.poll <= 1 and 0.01 <= args.sample <= 1 and 0 < args.timeout <= 3600):
        p.error("need --poll 0.05-1 s, --sample 0.01-1 s and --timeout up to 3600 s")
    return args


# --- Input and the direct computation ----------------------------------------------------


def make_rows(directory: Path, n_rows: int, seed: int, fmt: str) -> Rows:
    """Write deterministic noisy iris rows as CSV (two decimals) or a float32 NPY; predict
    them directly with the runtime."""
    iris = load_dataset("iris")
    rng = np.random.default_rng(seed)
    picked = iris.X[rng.integers(0, len(iris.X), n_rows)]
    values = np.round(np.clip(picked + rng.normal(0.0, NOISE_SD, picked.shape), 0.01, None), 2)
    values = values.astype(np.float32)
    path = directory / f"rows.{fmt}"
    if fmt == "npy":
        np.save(path, values)
    else:
        np.savetxt(path, values, fmt="%.2f", delimiter=",", header=",".join(iris.feature_names))
        # savetxt prefixes the header with "# "; a header line of bare names is what users send.
        path.write_bytes(path.read_bytes().removeprefix(b"# "))
    demo = next(m for m in train_demo_models() if m.name == "iris")
    v1 = next(v for v in demo.versions if v.label == "v1")
    predictor = load_predictor("numpy", v1.artifact)
    expected = predictor.predict(values)
    return Rows(path, path.read_bytes(), values, expected, demo.labels, predictor)


def per_row_loop(rows: Rows, limit: int) -> LoopResult:
    """The tutorial's approach: `for input in inputs: result = predict(input)`, minus its sleep,
    over the first ``limit`` rows (of the CSV lines, or of the NPY array)."""
    results = []
    start = time.perf_counter()
    if rows.path.suffix == ".npy":
        lines = (row.tolist() for row in np.load(rows.path, mmap_mode="r")[:limit])
    else:
        lines = (
            [float(cell) for cell in line.split(",")]
            for line in rows.data.decode().splitlines()[1 : limit + 1]
        )
    for index, features in enumerate(lines):
        x = np.array([features], dtype=np.float32)
        # The single-row predict of bench/reference_app.py, the tutorial's endpoint.
        outcome = describe(rows.predictor.predict(x), task="classification", labels=rows.labels)
        results.append(
            {
                "input_index": index,
                "prediction": outcome[0].prediction,
                "label": outcome[0].label,
                "confidence": outcome[0].confidence,
            }
        )
    seconds = time.perf_counter() - start
    got = np.array([r["prediction"] for r in results], dtype=np.float32)
    expected = rows.expected[: len(got)]
    error = np.abs(got - expected).max() if got.shape == expected.shape else np.inf
    return LoopResult(len(results), seconds, float(error))


# --- Processes of the running platform --------------------------------------------------


def _children(pid: int) -> list[int]:
    """Child pids of every thread of `pid` (django-q2 may fork from any of them)."""
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(c) for c in cpu.read_text(f"{task}/children").split()]
    return kids


def process_roles(serve_pid: int) -> dict[int, str]:
    """The serve process's descendants: "worker" under `manage.py qcluster`, "web" otherwise."""
    roles: dict[int, str] = {}
    for child in _children(serve_pid):
        role = "worker" if "qcluster" in cpu.read_text(f"/proc/{child}/cmdline") else "web"
        stack = [child]
        while stack:  # bounded by the process tree, a few processes deep
            pid = stack.pop()
            roles[pid] = role
            stack += _children(pid)
    return roles


def status_mb(pid: int, key: str, source: str = "status") -> float:
    """A kB field of /proc/<pid>/status or (Pss) smaps_rollup in MB; 0.0 once the pid is gone."""
    for line in cpu.read_text(f"/proc/{pid}/{source}").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    """Resident set size of one process in MB from /proc/<pid>/statm (cheaper than status)."""
    fields = cpu.read_text(f"/proc/{pid}/statm").split()
    return int(fields[1]) * PAGE_SIZE / 2**20 if len(fields) > 1 else 0.0


class MemorySampler:
    """Samples resident memory, Pss and CPU of the platform's processes by role on a thread."""

    # Reading Pss walks a process's page tables (about 1 ms for each qcluster process), so it
    # is read on every PSS_EVERY-th sample only, to keep the sampler's own CPU small.
    PSS_EVERY = 10

    def __init__(self, serve_pid: int, interval_s: float) -> None:
        self.serve_pid, self.interval_s = serve_pid, interval_s
        self.peak_mb = {"web": 0.0, "worker": 0.0}
        self.peak_sum_mb = {"web": 0.0, "worker": 0.0}
        self.worker_pss_mb = 0.0
        self.samples = 0
        self.roles: dict[int, str] = {}
        self._cpu_first: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """Take a first sample, then sample every `interval_s` until stop()."""
        self._sample()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        with_pss = self.samples % self.PSS_EVERY == 0
        self.samples += 1
        sums = {"web": 0.0, "worker": 0.0}
        pss = 0.0
        for pid, role in process_roles(self.serve_pid).items():
            self.roles[pid] = role
            if pid not in self._cpu_first:
                self._cpu_first[pid] = cpu.process_seconds(pid)
            rss = rss_mb(pid)
            self.peak_mb[role] = max(self.peak_mb[role], rss)
            sums[role] += rss
            if with_pss and role == "worker":
                pss += status_mb(pid, "Pss", "smaps_rollup")
        for role in sums:
            self.peak_sum_mb[role] = max(self.peak_sum_mb[role], sums[role])
        self.worker_pss_mb = max(self.worker_pss_mb, pss)

    def cpu_used(self, role: str) -> float:
        """CPU seconds the role's processes used since they were first seen."""
        return sum(
            max(cpu.process_seconds(pid) - first, 0.0)
            for pid, first in self._cpu_first.items()
            if self.roles[pid] == role
        )

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def py_spy(out_dir: Path | None, serve_pid: int, profile: str):
    """Record raw py-spy profiles of the web and qcluster process trees while the block runs."""
    procs: list[subprocess.Popen[bytes]] = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for pid in _children(serve_pid):
            role = "worker" if "qcluster" in cpu.read_text(f"/proc/{pid}/cmdline") else "web"
            out = out_dir / f"{profile}-{role}.txt"
            cmd = [str(PY_SPY), "record", "-p", str(pid), "--subprocesses", "-r", "100"]
            cmd += ["-f", "raw", "-o", str(out)]
            procs.append(
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        time.sleep(1.0)  # let py-spy attach before the job starts
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


# --- The job over HTTP ------------------------------------------------------------------


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def batch_key(instance: platform_setup.Instance) -> str:
    """A new API key of the demo user with the batch and read scopes."""
    out = platform_setup.manage(
        instance.env, "createapikey", "demo", "--scopes", "batch,read", "--name", "batch-bench"
    )
    return out.strip().splitlines()[-1].strip()


def submit_and_wait(
    session: requests.Session, base: str, rows: Rows, args: argparse.Namespace
) -> tuple[dict, dict[str, float]]:
    """Submit the CSV, poll until the job ends; the final status body and the client times."""
    t0 = time.monotonic()
    resp = session.post(
        f"{base}/api/v1/predict/batch",
        files={"file": (rows.path.name, rows.data, "application/octet-stream")},
        data={"model": "iris", "model_version": "v1"},
        timeout=args.timeout,
    )
    t_accepted, wall_accepted = time.monotonic(), time.time()
    if resp.status_code != 202:
        raise CheckError(f"submit answered {resp.status_code}: {resp.text[:500]}")
    status_url = base + resp.json()["links"]["self"]
    polls, next_poll = 0, t_accepted
    while True:
        time.sleep(max(0.0, next_poll - time.monotonic()))
        next_poll = time.monotonic() + args.poll
        body = session.get(status_url, timeout=30).json()
        polls += 1
        if body["status"] in ("completed", "failed", "cancelled"):
            break
        if time.monotonic() - t0 > args.timeout:
            raise CheckError(f"job not done after {args.timeout:g}s: {body}")
    t_done, wall_done = time.monotonic(), time.time()
    if body["status"] != "completed" or body["completed"] != len(rows.expected):
        raise CheckError(f"job ended {body['status']}: {body.get('error')}")
    times = {
        "end_to_end_s": t_done - t0,
        "upload_s": t_accepted - t0,
        "queue_s": _epoch(body["started_at"]) - wall_accepted,
        "processing_s": _epoch(body["finished_at"]) - _epoch(body["started_at"]),
        "notice_s": wall_done - _epoch(body["finished_at"]),
        "polls": polls,
    }
    return body, times


def download(session: requests.Session, url: str) -> tuple[bytes, float]:
    """GET a whole result download; its bytes and seconds."""
    start = time.monotonic()
    resp = session.get(url, timeout=600)
    seconds = time.monotonic() - start
    if resp.status_code != 200:
        raise CheckError(f"GET {url} answered {resp.status_code}: {resp.text[:300]}")
    return resp.content, seconds


def check_results(npy: bytes, csv: bytes, rows: Rows) -> float:
    """Raise CheckError unless the downloads match the direct computation; the largest error."""
    n = len(rows.expected)
    out = np.load(io.BytesIO(npy), allow_pickle=False)
    if out.shape != (n, 3):
        raise CheckError(f"npy result has shape {out.shape}, expected {(n, 3)}")
    row_sums = np.abs(out.sum(axis=1, dtype=np.float64) - 1.0).max()
    if row_sums > TOLERANCE:
        raise CheckError(f"probabilities of a row sum to 1 +- {row_sums:.3g}")
    error = float(np.abs(out - rows.expected).max())
    if error > TOLERANCE:
        raise CheckError(f"results differ from the direct computation by up to {error:.3g}")
    lines = csv.count(b"\n")
    if lines != n + 1:
        raise CheckError(f"csv result has {lines} lines, expected {n + 1} (header and rows)")
    return error


def run_job(
    running: platform_setup.Running, key: str, rows: Rows, args: argparse.Namespace, profile: str
) -> JobResult:
    """Submit, wait, download and check one job while sampling the platform's memory."""
    session = requests.Session()
    session.headers["X-API-Key"] = key
    base, serve_pid = running.base_url, running.server.pgid
    assert serve_pid is not None
    sampler = MemorySampler(serve_pid, args.sample)
    with py_spy(args.py_spy, serve_pid, profile):
        sampler.start()
        try:
            before = cpu.sample(None)
            body, times = submit_and_wait(session, base, rows, args)
            web_cpu, worker_cpu = sampler.cpu_used("web"), sampler.cpu_used("worker")
            after = cpu.sample(None)
            services = after.services_since(before)
            host_cpu = after.host_busy_s - before.host_busy_s
            ours = web_cpu + worker_cpu + services + after.generator_s - before.generator_s
            results = f"{base}/api/v1/predict/batch/{body['job_id']}/results"
            npy, npy_s = download(session, f"{results}?format=npy")
            csv, csv_s = download(session, f"{results}?format=csv")
        finally:
            sampler.stop()
    hwm = {
        str(pid): mb
        for pid, role in sampler.roles.items()
        if role == "worker" and (mb := status_mb(pid, "VmHWM"))
    }
    return JobResult(
        profile=profile,
        format=rows.path.suffix.lstrip("."),
        rows=len(rows.expected),
        end_to_end_s=times["end_to_end_s"],
        upload_s=times["upload_s"],
        queue_s=times["queue_s"],
        processing_s=times["processing_s"],
        notice_s=times["notice_s"],
        npy_s=npy_s,
        csv_s=csv_s,
        npy_mb=len(npy) / 2**20,
        csv_mb=len(csv) / 2**20,
        worker_peak_mb=sampler.peak_mb["worker"],
        worker_sum_mb=sampler.peak_sum_mb["worker"],
        worker_pss_mb=sampler.worker_pss_mb,
        worker_hwm_mb=max(hwm.values(), default=0.0),
        web_peak_mb=sampler.peak_mb["web"],
        web_cpu_s=web_cpu,
        worker_cpu_s=worker_cpu,
        services_cpu_s=services,
        other_cpu_s=max(host_cpu - ours, 0.0),
        max_error=check_results(npy, csv, rows),
        polls=int(times["polls"]),
        samples=sampler.samples,
        hwm_by_process=hwm,
    )


def run_profile(profile: str, rows: Rows, args: argparse.Namespace, logs: Path) -> JobResult:
    """A throw-away instance of `profile`, served, with one batch job through it."""
    with platform_setup.instance(profile, args.redis_db) as instance:
        key = batch_key(instance)
        cpu.settle(args.quiet_wait)
        with platform_setup.serving(instance, logs / f"batch-{profile}.log") as running:
            return run_job(running, key, rows, args, profile)


# --- Report -----------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def as_table(jobs: list[JobResult], loop: LoopResult) -> str:
    """A compact table of the jobs, the per-row loop and the targets."""
    title = f"{jobs[0].format.upper()} job of {jobs[0].rows:,} rows" if jobs else "No job"
    lines = [
        f"Batch {title} of iris features, model iris v1",
        f"{'profile':<11}{'rows/s':>9}{'e2e s':>7}{'upload':>7}{'queue':>7}{'process':>8}"
        f"{'notice':>7}{'npy dl':>7}{'csv dl':>7}{'wk peak':>8}{'wk sum':>7}{'wk pss':>7}"
        f"{'wk hwm':>7}{'web pk':>7}{'cpu web/wk/db/oth':>19}",
    ]
    for j in jobs:
        cpu_s = (j.web_cpu_s, j.worker_cpu_s, j.services_cpu_s, j.other_cpu_s)
        lines.append(
            f"{j.profile:<11}{j.rows_per_s:>9,.0f}{j.end_to_end_s:>7.2f}{j.upload_s:>7.2f}"
            f"{j.queue_s:>7.2f}{j.processing_s:>8.2f}{j.notice_s:>7.2f}{j.npy_s:>7.2f}"
            f"{j.csv_s:>7.2f}{j.worker_peak_mb:>8.0f}{j.worker_sum_mb:>7.0f}"
            f"{j.worker_pss_mb:>7.0f}{j.worker_hwm_mb:>7.0f}{j.web_peak_mb:>7.0f}"
            f"{'/'.join(f'{v:.1f}' for v in cpu_s):>19}"
        )
    lines.append(
        f"per-row loop (in-process): {loop.rows:,} rows in {loop.seconds:.2f} s = "
        f"{loop.rows_per_s:,.0f} rows/s"
    )
    lines.append("times in s (upload = submit to 202; queue = 202 to started_at; process =")
    lines.append("started_at to finished_at; notice = finished_at to the poll that saw it);")
    lines.append("memory in MB (wk = qcluster processes: highest VmRSS of one, highest sums of")
    lines.append("VmRSS and of Pss, highest VmHWM after the job; web pk = highest web VmRSS);")
    lines.append("cpu in s from submit to completed: web, qcluster, db (every postgres and")
    lines.append("redis-server process), oth (anything else on the host but this script)")
    for j in jobs:
        ratio = j.rows_per_s / loop.rows_per_s
        target = TARGET_ROWS_PER_S[(j.format, j.profile)]
        download = j.rows / j.csv_s
        lines.append(
            f"{j.profile} ({j.format}): {j.rows_per_s:,.0f} rows/s vs {target:,} "
            f"{_verdict(j.rows_per_s >= target)}; CSV download {download:,.0f} rows/s vs "
            f"{TARGET_CSV_DOWNLOAD_ROWS_PER_S:,} "
            f"{_verdict(download >= TARGET_CSV_DOWNLOAD_ROWS_PER_S)}; {ratio:.1f}x the loop vs "
            f"{TARGET_LOOP_RATIO:g}x {_verdict(ratio >= TARGET_LOOP_RATIO)}; worker peak "
            f"{j.worker_max_mb:.0f} MB in one process vs {TARGET_PEAK_MB} MB "
            f"{_verdict(j.worker_max_mb < TARGET_PEAK_MB)} (all qcluster processes: "
            f"{j.worker_sum_mb:.0f} MB RSS, {j.worker_pss_mb:.0f} MB Pss)"
        )
    return "\n".join(lines)


def as_json(jobs: list[JobResult], loop: LoopResult) -> str:
    """Every figure, with the targets."""
    return json.dumps(
        {
            "targets": {
                "rows_per_s": {f"{f}/{p}": v for (f, p), v in TARGET_ROWS_PER_S.items()},
                "csv_download_rows_per_s": TARGET_CSV_DOWNLOAD_ROWS_PER_S,
                "loop_ratio": TARGET_LOOP_RATIO,
                "worker_peak_mb": TARGET_PEAK_MB,
            },
            "loop": {**asdict(loop), "rows_per_s": loop.rows_per_s},
            "jobs": [
                {
                    **asdict(j),
                    "rows_per_s": j.rows_per_s,
                    "loop_ratio": j.rows_per_s / loop.rows_per_s,
                }
                for j in jobs
            ],
        },
        indent=2,
    )


def main(argv: list[str] | None = None) -> int:
    """Generate the rows, time the per-row loop, then one job per profile; non-zero on a check."""
    args = parse_args(argv)
    profiles = ["embedded", "production"] if args.profile == "both" else [args.profile]
    work = Path(tempfile.mkdtemp(prefix="batch-load-"))
    failures: list[str] = []
    jobs: list[JobResult] = []
    try:
        rows = make_rows(work, args.rows, args.seed, args.format)
        cpu.settle(args.quiet_wait)
        loop = per_row_loop(rows, args.loop_rows)
        if loop.max_error > TOLERANCE:
            failures.append(f"per-row loop differs from the direct computation: {loop.max_error}")
        for profile in profiles:
            try:
                jobs.append(run_profile(profile, rows, args, work))
            except (platform_setup.SetupError, CheckError, RuntimeError, OSError) as exc:
                failures.append(f"{profile}: {exc}")
            except requests.RequestException as exc:
                failures.append(f"{profile}: HTTP: {exc}")
        print(as_json(jobs, loop) if args.json else as_table(jobs, loop))
    finally:
        if failures:
            print("FAILED:\n" + "\n".join(failures), file=sys.stderr)
            print(f"server logs kept in {work}", file=sys.stderr)
            rows.path.unlink(missing_ok=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
