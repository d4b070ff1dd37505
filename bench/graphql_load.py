"""GraphQL `predict` mutation throughput against REST `POST /api/v1/predict`, on one server.

Both go through the same service (validation, inference, the stored prediction) with the same
API key; what differs is the transport: DRF's view against strawberry's (parse, validate with
the depth, alias and token limits, execute). Rounds alternate REST and GraphQL on the same
server; the median req/s of each is compared (target: GraphQL at least 0.8x REST).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import requests

if __package__ in (None, ""):  # run as a script: make `bench` importable from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cpu, platform_setup
from bench.loadgen import LoadResult, LoadSettings, Target, measure_server
from bench.stream_load import serving, stream_key

ROW = [5.1, 3.5, 1.4, 0.2]
REST_BODY = json.dumps({"input_data": ROW, "model": "iris", "model_version": "v1"})
QUERY = (
    'mutation Predict($row: JSON!) { predict(inputData: $row, model: "iris", '
    'modelVersion: "v1") { predictionId model modelVersion prediction label confidence '
    "processingTime timestamp cached routing } }"
)
GRAPHQL_BODY = json.dumps({"query": QUERY, "variables": {"row": ROW}})
TARGET_RATIO = 0.8


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profile", choices=("embedded", "production"), default="embedded")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3, help="(REST, GraphQL) pairs; medians shown")
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--quiet-wait", type=float, default=30.0)
    p.add_argument("--redis-db", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not (1 <= args.rounds <= 10 and 0 < args.duration <= 120):
        p.error("need 1-10 rounds and a duration of at most 120 s")
    return args


def probe(base: str, key: str) -> None:
    """One request each: the same label and probabilities, and no GraphQL error."""
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    rest = requests.post(f"{base}/api/v1/predict", data=REST_BODY, headers=headers, timeout=30)
    gql = requests.post(f"{base}/graphql", data=GRAPHQL_BODY, headers=headers, timeout=30)
    if rest.status_code != 200 or gql.status_code != 200 or "errors" in gql.json():
        raise RuntimeError(f"probe failed: {rest.text[:300]} / {gql.text[:300]}")
    answer = gql.json()["data"]["predict"]
    expected = rest.json()
    if answer["label"] != expected["label"] or any(
        abs(a - b) > 1e-6 for a, b in zip(answer["prediction"], expected["prediction"], strict=True)
    ):
        raise RuntimeError(f"GraphQL and REST disagree: {answer} / {expected}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = LoadSettings(
        connections=args.connections, duration_s=args.duration, warmup_s=args.warmup
    )
    logs = Path(tempfile.mkdtemp(prefix="graphql-load-logs-"))
    runs: dict[str, list[LoadResult]] = {"rest": [], "graphql": []}
    try:
        with platform_setup.instance(args.profile, args.redis_db) as instance:
            key = stream_key(instance)
            with serving(instance, None, logs / "serve.log") as (server, port):
                base = f"http://127.0.0.1:{port}"
                probe(base, key)
                headers = {"X-API-Key": key, "Content-Type": "application/json"}
                # Every answer must carry the label: a GraphQL error is a 200 without it.
                targets = {
                    "rest": Target(f"{base}/api/v1/predict", REST_BODY, headers, '"setosa"'),
                    "graphql": Target(f"{base}/graphql", GRAPHQL_BODY, headers, '"setosa"'),
                }
                for _ in range(args.rounds):
                    for name, target in targets.items():
                        cpu.settle(args.quiet_wait)
                        runs[name].append(
                            measure_server(target, settings, args.generator, server.pgid, port)
                        )
    except (platform_setup.SetupError, RuntimeError, OSError) as exc:
        print(f"FAILED: {exc}\nlogs in {logs}", file=sys.stderr)
        return 1
    bad = [
        f"{name} round {i}: {r.errors} errors, {r.requests - r.marked} answers without a label"
        for name, rounds in runs.items()
        for i, r in enumerate(rounds, 1)
        if r.errors or r.marked != r.requests
    ]
    rps = {name: statistics.median(r.rps for r in rounds) for name, rounds in runs.items()}
    ratio = rps["graphql"] / rps["rest"] if rps["rest"] else 0.0
    met = ratio >= TARGET_RATIO and not bad
    if args.json:
        print(
            json.dumps(
                {
                    "runs": {n: [r.as_dict() for r in rounds] for n, rounds in runs.items()},
                    "rps": rps,
                    "ratio": round(ratio, 3),
                    "met": met,
                    "failures": bad,
                },
                indent=2,
            )
        )
    else:
        print(
            f"predict over REST and GraphQL, {args.connections} connections, "
            f"{args.duration:g}s after {args.warmup:g}s warm-up, profile {args.profile}"
        )
        print(
            f"{'api':<8} {'round':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'cpu ms/req':>10} {'errors':>6} {'other cpu':>9}"
        )
        for name, rounds in runs.items():
            for i, r in enumerate(rounds, 1):
                print(
                    f"{name:<8} {i:>5} {r.rps:8.1f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} "
                    f"{r.server_cpu_ms_per_request:10.2f} {r.errors:6d} {r.other_cpu_cores:9.2f}"
                )
        print(
            f"median req/s: GraphQL {rps['graphql']:.1f} / REST {rps['rest']:.1f} = "
            f"{ratio:.2f}x (target >= {TARGET_RATIO}x): {'met' if met else 'NOT met'}"
        )
        for line in bad:
            print("FAILED: " + line, file=sys.stderr)
    return 0 if met else 2


if __name__ == "__main__":
    sys.exit(main())
