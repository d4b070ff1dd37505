"""V2 inference (binary and JSON tensors) against /api/v1/predict, and ONNX against numpy.

In one run, on one throw-away instance (embedded profile) served by ``manage.py serve``:

1. closed-loop wrk load of iris v1 through each of: ``POST /api/v1/predict`` (one JSON row),
   V2 ``infer`` with one row as JSON and as binary tensors, and V2 with 1,000-row tensors as
   JSON and as binary; throughput in requests and in rows per second, server CPU per row;
2. the REST API's own way of sending 1,000 rows at once: ``POST /api/v1/predict/batch`` with
   JSON ``inputs``, timed from submission until a status poll sees ``completed``;
3. digits through V2 binary 1,000-row tensors on the numpy version ``v1`` and its ONNX export
   ``v1-onnx``, then both runtimes in this process (one thread each) on 1 to 100,000 rows.

Every scenario is probed once before it is loaded: all answer row 0 of iris with the same label
and probabilities (within 1e-5), and the two digits versions agree on 1,000 rows.
"""

from __future__ import annotations

import os

# One BLAS thread, as `manage.py serve` gives the web processes; onnxruntime's
# sessions use one intra-op thread. Set before numpy is imported.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import requests  # noqa: E402

if __package__ in (None, ""):  # run as a script: make `bench` importable from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cpu, platform_setup  # noqa: E402
from bench.loadtypes import LoadResult, LoadSettings  # noqa: E402
from bench.wrk import ensure_wrk  # noqa: E402
from bench.wrk import run_script as wrk_script  # noqa: E402

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
BIG = 1000
TOLERANCE = 1e-5
HEADER_LENGTH = "Inference-Header-Content-Length"
# wrk reads the body from a file: binary tensors hold NUL bytes, which no environment can.
LUA = r"""
wrk.method = "POST"
local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.body = file:read("*a")
file:close()
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end
non200 = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + thread:get("non200") end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "non200": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, bad, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class Scenario:
    """One kind of request to load: where, what body, how many rows it predicts."""

    name: str
    path: str
    body: bytes
    headers: dict[str, str]
    rows: int
    decode: str  # "rest" or "v2": how to read the answer


@dataclass
class Measured:
    scenario: Scenario
    result: LoadResult

    @property
    def rows_per_s(self) -> float:
        return self.result.rps * self.scenario.rows

    @property
    def cpu_us_per_row(self) -> float:
        rows = self.result.requests * self.scenario.rows
        return 1e6 * self.result.server_cpu_s / rows if rows else 0.0


@dataclass
class Report:
    settings: LoadSettings
    big_connections: int = 4
    load: list[Measured] = field(default_factory=list)
    batch_seconds: list[float] = field(default_factory=list)
    runtime: list[dict] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)


class CheckError(AssertionError):
    """Two ways of predicting the same rows disagree, or a request failed."""


# --- requests ---------------------------------------------------------------------------------


def v2_body(rows: np.ndarray, *, binary: bool) -> tuple[bytes, dict[str, str]]:
    """An infer request as tritonclient sends it: binary tensors in and out, or JSON."""
    spec = {"name": "input", "shape": list(rows.shape), "datatype": "FP32"}
    if not binary:
        document = {"inputs": [{**spec, "data": rows.ravel().tolist()}]}
        return json.dumps(document).encode(), {"Content-Type": "application/json"}
    raw = np.ascontiguousarray(rows, dtype="<f4").tobytes()
    document = {
        "inputs": [{**spec, "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }
    header = json.dumps(document).encode()
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return header + raw, headers


def iris_rows(n: int, seed: int = 0) -> np.ndarray:
    from predictions.runtime.datasets import load_dataset

    X = load_dataset("iris").X
    rng = np.random.default_rng(seed)
    rows = X[rng.integers(0, len(X), n)] + rng.normal(0, 0.05, (n, X.shape[1]))
    rows = np.round(np.clip(rows, 0.01, None), 2).astype("f4")
    rows[0] = IRIS_ROW
    return rows


def digits_rows(n: int, seed: int = 0) -> np.ndarray:
    from predictions.runtime.datasets import load_dataset

    X = load_dataset("digits").X
    rng = np.random.default_rng(seed)
    return np.clip(X[rng.integers(0, len(X), n)] + rng.normal(0, 1, (n, 64)), 0, 16).astype("f4")


def scenarios(key: str) -> list[Scenario]:
    auth = {"X-API-Key": key}
    iris = "/v2/models/iris/versions/v1/infer"
    rest = json.dumps({"input_data": IRIS_ROW, "model": "iris", "model_version": "v1"}).encode()
    one, many, digits = iris_rows(1), iris_rows(BIG), digits_rows(BIG)
    made = [
        Scenario(
            "REST predict, 1 row JSON",
            "/api/v1/predict",
            rest,
            {**auth, "Content-Type": "application/json"},
            1,
            "rest",
        )
    ]
    for label, rows, path in (
        ("V2 iris, 1 row", one, iris),
        (f"V2 iris, {BIG} rows", many, iris),
        (f"V2 digits numpy, {BIG} rows", digits, "/v2/models/digits/versions/v1/infer"),
        (f"V2 digits ONNX, {BIG} rows", digits, "/v2/models/digits/versions/v1-onnx/infer"),
    ):
        kinds = (True,) if "digits" in label else (False, True)
        for binary in kinds:
            body, headers = v2_body(rows, binary=binary)
            name = f"{label} {'binary' if binary else 'JSON'}"
            made.append(Scenario(name, path, body, {**auth, **headers}, len(rows), "v2"))
    return made


def answer(base_url: str, scenario: Scenario) -> tuple[list[str], np.ndarray]:
    """Send a scenario's request once: its labels and probabilities."""
    response = requests.post(
        base_url + scenario.path, data=scenario.body, headers=scenario.headers, timeout=60
    )
    if response.status_code != 200:
        raise CheckError(f"{scenario.name}: {response.status_code} {response.text[:300]}")
    if scenario.decode == "rest":
        body = response.json()
        return [body["label"]], np.array([body["prediction"]], dtype="f4")
    import tritonclient.http as httpclient

    length = response.headers.get(HEADER_LENGTH)
    result = httpclient.InferenceServerClient.parse_response_body(
        response.content, header_length=int(length) if length else None
    )
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    return labels, result.as_numpy("prediction")


def check_answers(base_url: str, made: list[Scenario]) -> list[str]:
    """Every iris scenario agrees on row 0 with REST; ONNX and numpy digits agree on all rows."""
    answers = {s.name: answer(base_url, s) for s in made}
    ref_labels, ref_probabilities = answers[made[0].name]
    notes = []
    for scenario in made:
        labels, probabilities = answers[scenario.name]
        if len(labels) != scenario.rows:
            raise CheckError(f"{scenario.name}: {len(labels)} answers for {scenario.rows} rows")
        if "iris" in scenario.name or scenario.decode == "rest":
            error = float(np.abs(probabilities[0] - ref_probabilities[0]).max())
            if labels[0] != ref_labels[0] or error > TOLERANCE:
                raise CheckError(f"{scenario.name}: row 0 is {labels[0]} ({error:.2g} apart)")
    numpy_answer = next(v for k, v in answers.items() if "digits numpy" in k)
    onnx_answer = next(v for k, v in answers.items() if "digits ONNX" in k)
    error = float(np.abs(numpy_answer[1] - onnx_answer[1]).max())
    if numpy_answer[0] != onnx_answer[0] or error > TOLERANCE:
        raise CheckError(f"digits: ONNX and numpy disagree (max difference {error:.2g})")
    notes.append(
        f"every iris scenario answers row 0 as REST does ({ref_labels[0]}, within {TOLERANCE:g});"
        f" digits ONNX and numpy agree on {BIG} rows (max difference {error:.1e}, same labels)"
    )
    return notes


# --- load -------------------------------------------------------------------------------------


def run_wrk(
    wrk: str, url: str, scenario: Scenario, settings: LoadSettings, seconds: float, work: Path
) -> LoadResult:
    script, body = work / "post_file.lua", work / "body.bin"
    script.write_text(LUA)
    body.write_bytes(scenario.body)
    env = {
        "BENCH_BODY_FILE": str(body),
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in scenario.headers.items()),
    }
    return wrk_script(wrk, script, url, env, settings, seconds)


def measure(
    wrk: str, base_url: str, scenario: Scenario, settings: LoadSettings, pgid, work: Path
) -> LoadResult:
    """Warm up, then measure, with the server group's CPU time."""
    url = base_url + scenario.path
    if settings.warmup_s > 0:
        run_wrk(wrk, url, scenario, settings, settings.warmup_s, work)
    before = cpu.sample(pgid)
    result = run_wrk(wrk, url, scenario, settings, settings.duration_s, work)
    after = cpu.sample(pgid)
    return replace(
        result,
        server_cpu_s=after.group_s - before.group_s,
        generator_cpu_s=after.generator_s - before.generator_s,
        host_busy_s=after.host_busy_s - before.host_busy_s,
    )


def batch_job_seconds(base_url: str, key: str, rows: np.ndarray, poll_s: float = 0.01) -> float:
    """Submit rows to /api/v1/predict/batch as JSON; seconds until a poll sees completed."""
    headers = {"X-API-Key": key}
    body = {"inputs": rows.tolist(), "model": "iris", "model_version": "v1"}
    started = time.perf_counter()
    submitted = requests.post(
        base_url + "/api/v1/predict/batch", json=body, headers=headers, timeout=60
    )
    if submitted.status_code != 202:
        raise CheckError(f"batch submit: {submitted.status_code} {submitted.text[:300]}")
    job_url = f"{base_url}/api/v1/predict/batch/{submitted.json()['job_id']}"
    while True:
        status = requests.get(job_url, headers=headers, timeout=30).json()["status"]
        if status == "completed":
            return time.perf_counter() - started
        if status in ("failed", "cancelled"):
            raise CheckError(f"batch job {status}")
        if time.perf_counter() - started > 120:
            raise CheckError("batch job did not complete within 120 s")
        time.sleep(poll_s)


# --- runtimes in-process ----------------------------------------------------------------------


def runtime_comparison(sizes: list[int], budget_s: float) -> list[dict]:
    """Median seconds per predict call of digits v1 with numpy and as ONNX, per batch size."""
    from predictions.runtime.artifacts import load_dense
    from predictions.runtime.onnx import dense_to_onnx, load_onnx
    from predictions.runtime.training import train_demo_models

    digits = next(m for m in train_demo_models() if m.name == "digits")
    dense = load_dense(digits.versions[0].artifact)
    onnx = load_onnx(dense_to_onnx(dense))
    out = []
    for size in sizes:
        X = digits_rows(size, seed=size)
        timings = {}
        for name, predictor in (("numpy", dense), ("onnx", onnx)):
            predictor.predict(X)  # warm
            samples, deadline = [], time.perf_counter() + budget_s
            while time.perf_counter() < deadline or len(samples) < 5:
                started = time.perf_counter()
                predictor.predict(X)
                samples.append(time.perf_counter() - started)
            timings[name] = statistics.median(samples)
        out.append({"rows": size, **{f"{k}_s": v for k, v in timings.items()}})
    return out


# --- output -----------------------------------------------------------------------------------


def table(report: Report) -> str:
    s = report.settings
    lines = [
        f"Load: closed loop, {s.connections} connections for one-row requests and "
        f"{report.big_connections} for {BIG}-row ones, {s.duration_s:g}s after {s.warmup_s:g}s "
        "warm-up (wrk, keep-alive); embedded profile; iris v1 unless named",
        f"{'scenario':<34} {'req/s':>8} {'rows/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'cpu us/row':>10} {'errors':>6} {'other cpu':>9}",
    ]
    for m in report.load:
        r = m.result
        lines.append(
            f"{m.scenario.name:<34} {r.rps:>8.1f} {m.rows_per_s:>10.0f} {r.p50_ms:>8.2f} "
            f"{r.p99_ms:>8.2f} {m.cpu_us_per_row:>10.1f} {r.errors:>6} {r.other_cpu_cores:>9.2f}"
        )
    by_name = {m.scenario.name: m for m in report.load}
    rest = by_name.get("REST predict, 1 row JSON")
    if rest is not None:
        lines += ["", "rows/s relative to REST /api/v1/predict (one JSON row per request):"]
        for m in report.load:
            if "iris" in m.scenario.name:
                lines.append(f"  {m.scenario.name:<32} {m.rows_per_s / rest.rows_per_s:>7.2f}x")
    if report.batch_seconds:
        median = statistics.median(report.batch_seconds)
        relative = f" ({BIG / median / rest.rows_per_s:.2f}x REST predict)" if rest else ""
        lines.append(
            f"REST /api/v1/predict/batch, {BIG} JSON rows, submit -> completed (one client, "
            f"{len(report.batch_seconds)} jobs): median {median * 1e3:.0f} ms = "
            f"{BIG / median:.0f} rows/s{relative}"
        )
    bin_one = by_name.get("V2 iris, 1 row binary")
    bin_big = by_name.get(f"V2 iris, {BIG} rows binary")
    if rest and bin_one and bin_big:
        ratio = bin_one.rows_per_s / rest.rows_per_s
        verdict = "met" if ratio >= 1 else "NOT met"
        lines.append(
            f"target: V2 binary at least as fast per row as REST JSON: one row {ratio:.2f}x "
            f"({verdict}), {BIG} rows {bin_big.rows_per_s / rest.rows_per_s:.1f}x"
        )
    onnx = by_name.get(f"V2 digits ONNX, {BIG} rows binary")
    numpy_ = by_name.get(f"V2 digits numpy, {BIG} rows binary")
    if onnx and numpy_:
        lines.append(
            f"digits over V2 ({BIG} rows binary): ONNX/numpy rows/s "
            f"{onnx.rows_per_s / numpy_.rows_per_s:.2f}x"
        )
    if report.runtime:
        lines += ["", "digits v1 in-process, one thread, median per predict call:"]
        lines.append(f"{'rows':>8} {'numpy ms':>10} {'onnx ms':>10} {'onnx/numpy':>10}")
        for row in report.runtime:
            lines.append(
                f"{row['rows']:>8} {row['numpy_s'] * 1e3:>10.3f} {row['onnx_s'] * 1e3:>10.3f} "
                f"{row['onnx_s'] / row['numpy_s']:>9.2f}x"
            )
    lines += ["", *[f"check: {note}" for note in report.checks]]
    return "\n".join(lines)


def as_json(report: Report) -> str:
    return json.dumps(
        {
            "settings": {**vars(report.settings), "big_connections": report.big_connections},
            "load": [
                {
                    "scenario": m.scenario.name,
                    "rows_per_request": m.scenario.rows,
                    "rows_per_s": round(m.rows_per_s, 1),
                    "cpu_us_per_row": round(m.cpu_us_per_row, 2),
                    **m.result.as_dict(),
                }
                for m in report.load
            ],
            "batch_seconds": report.batch_seconds,
            "runtime": report.runtime,
            "checks": report.checks,
        },
        indent=2,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--connections", type=int, default=16, help="for one-row requests")
    p.add_argument(
        "--big-connections",
        type=int,
        default=4,
        help=f"for {BIG}-row requests (4 keep the server's 4 request threads busy)",
    )
    p.add_argument("--only", default="", help="run only scenarios whose name contains this")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--batch-jobs", type=int, default=5, help="/predict/batch jobs to time")
    p.add_argument(
        "--runtime-sizes", default="1,100,1000,100000", help="rows per call, in-process part"
    )
    p.add_argument("--runtime-budget", type=float, default=1.0, help="seconds per size/runtime")
    p.add_argument("--runtime-only", action="store_true", help="skip the server")
    p.add_argument("--quiet-wait", type=float, default=30.0, help="max wait for an idle host")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = LoadSettings(
        connections=args.connections,
        duration_s=args.duration,
        warmup_s=args.warmup,
        timeout_s=30.0,
    )
    big = replace(settings, connections=args.big_connections)
    report = Report(settings, big_connections=args.big_connections)
    sizes = [int(s) for s in args.runtime_sizes.split(",") if s]
    if not args.runtime_only:
        wrk = ensure_wrk()
        if wrk is None:
            print("wrk is needed (apt-get install wrk)", file=sys.stderr)
            return 1
        work = Path(tempfile.mkdtemp(prefix="v2-load-"))
        with platform_setup.instance("embedded") as instance:
            key = platform_setup.manage(
                instance.env,
                "createapikey",
                "demo",
                "--scopes",
                "predict,batch,read",
                "--name",
                "v2-bench",
                # The benchmark measures throughput, not the default rate limits.
                "--rate",
                "predict=100000000/m,batch=100000/m,api=100000000/m",
            ).strip()
            with platform_setup.serving(instance, work / "serve.log") as running:
                made = scenarios(key)
                report.checks += check_answers(running.base_url, made)
                for scenario in made:
                    if args.only not in scenario.name:
                        continue
                    cpu.settle(args.quiet_wait)
                    chosen = settings if scenario.rows == 1 else big
                    result = measure(
                        wrk, running.base_url, scenario, chosen, running.server.pgid, work
                    )
                    report.load.append(Measured(scenario, result))
                rows = iris_rows(BIG)
                for _ in range(args.batch_jobs if not args.only else 0):
                    report.batch_seconds.append(batch_job_seconds(running.base_url, key, rows))
    report.runtime = runtime_comparison(sizes, args.runtime_budget)
    print(as_json(report) if args.json else table(report))
    failed = [m.scenario.name for m in report.load if m.result.errors]
    if failed:
        print(f"FAILED: errors in {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
