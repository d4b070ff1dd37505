"""Storing shadow answers: the Python time a group of copies costs the shadow thread.

The shadow thread answers and stores the copies of 0.2 s in one go, and every millisecond of
Python it runs is a millisecond the request threads of its process wait for the GIL. This
measures, on a throw-away instance, groups of 100 copies of iris stored two ways in the same
run, alternating:

- `compiler`: unsaved `ShadowPrediction` instances inserted through `QuerySet._insert` (how
  `Model.save()` and `bulk_create()` insert; what the shadow thread did before);
- `plain`: the shadow thread's own way (`predictions/services/shadow.py`): plain answer
  records and one statement put together per column.

For each it prints the median time per group: in all, inside the database driver's
`execute` (the GIL released for most of it), and the rest, Python with the GIL held. On
PostgreSQL `plain`'s statement commits asynchronously (`bench/shadow_insert.py` measures what
that and the schema save the database).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import platform_setup, traffic_admin

_MEASURE = """
import statistics
from dataclasses import asdict
from django.db import connection
from django.db.models.constants import OnConflict
from accounts.models import User
from predictions.registry import registry
from predictions.services.predict import prediction_create
from predictions.services.shadow import ShadowJob, _insert_answers, shadow_answers

model = registry.model("iris")
shadow = model.versions["v2"]
user = User.objects.get(username="demo")
rng = np.random.default_rng(0)
rows = rng.uniform(0.1, 7.9, size=(P["group"], 4)).round(1).astype(np.float32)
primaries = [
    prediction_create(user=user, api_key=None, input_data=row.tolist(), model_name="iris")
    for row in rows
]
jobs = [
    ShadowJob(p.id, shadow, row[None, :], model.task, model.labels, p.label)
    for p, row in zip(primaries, rows)
]
opts = ShadowPrediction._meta
compiler_fields = [f for f in opts.concrete_fields if f is not opts.auto_field]

def compiler():
    objs = [ShadowPrediction(**asdict(answer)) for answer in shadow_answers(jobs)]
    ShadowPrediction.objects._insert(objs, compiler_fields, on_conflict=OnConflict.IGNORE)

def plain():
    _insert_answers(shadow_answers(jobs))

in_db = []
def timed_execute(execute, sql, params, many, context):
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        in_db.append(time.perf_counter() - started)

def stored():
    fields = ("primary_id", "model_version_id", "output", "label", "confidence", "agrees", "error")
    return [
        tuple(json.dumps(v) if k == "output" else str(v) for k, v in row.items())
        for row in ShadowPrediction.objects.order_by("primary_id").values(*fields)
    ]

ways = {"compiler": compiler, "plain": plain}
times = {name: {"all": [], "db": []} for name in ways}
rows_of = {}
for i in range(P["groups"]):
    for name in (("compiler", "plain") if i % 2 == 0 else ("plain", "compiler")):
        ShadowPrediction.objects.all().delete()
        in_db.clear()
        with connection.execute_wrapper(timed_execute):
            started = time.perf_counter()
            ways[name]()
            elapsed = time.perf_counter() - started
        times[name]["all"].append(elapsed)
        times[name]["db"].append(sum(in_db))
        rows_of[name] = stored()
assert len(rows_of["plain"]) == len(jobs), len(rows_of["plain"])
assert rows_of["plain"] == rows_of["compiler"], "the two ways stored different rows"
emit({
    name: {
        "all": statistics.median(t["all"]),
        "db": statistics.median(t["db"]),
        "python": statistics.median(a - d for a, d in zip(t["all"], t["db"])),
    }
    for name, t in times.items()
} | {"rows": len(rows_of["plain"])})
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profile", choices=("embedded", "production", "both"), default="both")
    p.add_argument("--group", type=int, default=100, help="copies stored together")
    p.add_argument("--groups", type=int, default=40, help="groups stored each way")
    p.add_argument("--redis-db", type=int, default=6, help="Redis db for production")
    args = p.parse_args(argv)
    if not 1 <= args.group <= 100:
        p.error("--group must be between 1 and 100 (the shadow thread stores at most 100)")
    if not 1 <= args.groups <= 1000:
        p.error("--groups must be between 1 and 1000")
    return args


def measure(profile: str, args: argparse.Namespace) -> dict:
    """Both ways on a fresh instance of `profile`; medians in seconds per group."""
    with platform_setup.instance(profile, redis_db=args.redis_db) as instance:
        return traffic_admin.run_snippet(
            instance.env, _MEASURE, group=args.group, groups=args.groups
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profiles = ("embedded", "production") if args.profile == "both" else (args.profile,)
    print(
        f"Storing {args.group} shadow answers of iris at once, {args.groups} times each way "
        "(alternating); medians in ms per group"
    )
    print(f"{'profile':<11}{'way':<10}{'in all':>8}{'in db':>8}{'python':>8}")
    for profile in profiles:
        result = measure(profile, args)
        for way in ("compiler", "plain"):
            r = result[way]
            print(
                f"{profile:<11}{way:<10}{r['all'] * 1e3:8.3f}{r['db'] * 1e3:8.3f}"
                f"{r['python'] * 1e3:8.3f}"
            )
        c, p = result["compiler"], result["plain"]
        print(
            f"{profile:<11}{'ratio':<10}"
            + "".join(f"{p[k] / c[k]:7.2f}x" for k in ("all", "db", "python"))
            + f"   (plain/compiler; both stored the same {result['rows']} rows)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
