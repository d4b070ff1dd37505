"""Storing shadow rows on PostgreSQL: what one statement costs, with the schema before and now.

The shadow thread of each web process stores the copies of 0.2 s in one statement (about 34
rows at 340 req/s over two processes). On the production profile that statement runs on the
same cores as the requests, and the database's time for it is time the requests' own
statements can wait for. This measures, on a throw-away production instance holding
`--predictions` predictions, the platform's own statement (captured from
`predictions/services/shadow.py`'s `_insert_answers`, each time with rows for new primaries):

- `before`: the link to the primary with an index and a foreign-key constraint of its own
  (as up to migration `predictions.0005`), the statement in autocommit, committed
  synchronously;
- `async`: the same schema, the statement run as the shadow thread runs it (`_execute`: in a
  transaction with `SET LOCAL synchronous_commit TO OFF`);
- `now`: no index or constraint of the primary's own (migration `0006`), run as `async`:
  what the shadow thread does;
- `in-statement`: the schema of `now`, the setting made inside the statement instead
  (`WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL`, in autocommit), which
  saves two round trips (tried; `bench/README.md` says why it was not kept).

`before` and `async` alternate statement by statement; then the index and the constraint are
dropped, and `now` and `in-statement` alternate (the table has grown by then: that counts
against them).
For each, the median per statement: in all (wall clock), Python in the client (this thread's
CPU time, the GIL held), and the database backend's CPU time (from `/proc`, where the
database runs on this host; the log flush of an asynchronous commit is done by the WAL
writer, which this leaves out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import platform_setup, traffic_admin

_MEASURE = """
import os, statistics, uuid
from django.db import connection, transaction
from accounts.models import User
from predictions.services.shadow import ShadowAnswer, _execute, _insert_answers

user = User.objects.get(username="demo")
primary_version = ModelVersion.objects.get(model__name="iris", label="v1")
shadow_version = ModelVersion.objects.get(model__name="iris", label="v2")
cursor = connection.cursor()
ids = [uuid.uuid4() for _ in range(P["predictions"])]
cursor.execute(
    "INSERT INTO predictions_prediction (id, owner_id, model_version_id, input, output, label,"
    " confidence, processing_time, created_at, request_id, routing, cached)"
    " SELECT UNNEST(%s::uuid[]), %s, %s, '[[5.1, 3.5, 1.4, 0.2]]', '[0.9, 0.07, 0.03]',"
    " 'setosa', 0.9, 0.0001, NOW(), '', 'explicit', false",
    [ids, user.id, primary_version.id],
)
cursor.execute("ANALYZE")
unused = iter(ids)

def answers():
    return [
        ShadowAnswer(
            next(unused), shadow_version.id, 0.0001, [0.8, 0.15, 0.05], "setosa", 0.8, True
        )
        for _ in range(P["rows"])
    ]

captured = []
def capture(execute, sql, params, many, context):
    if sql.startswith("INSERT"):
        captured.append(sql)
    return execute(sql, params, many, context)
with connection.execute_wrapper(capture):
    _insert_answers(answers())
(insert_sql,) = captured
in_statement_sql = insert_sql.replace(
    " ON CONFLICT", " WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL ON CONFLICT"
)
assert in_statement_sql != insert_sql

# The statement's parameters for these rows, as _insert_answers binds them (not run).
def params_of(rows):
    out = []
    def keep(execute, sql, params, many, context):
        if sql.startswith("INSERT"):
            out.append(params)
            return None
        return execute(sql, params, many, context)
    with connection.execute_wrapper(keep):
        _insert_answers(rows)
    return out[0]

cursor.execute("SELECT pg_backend_pid()")
backend = cursor.fetchone()[0]
tick = os.sysconf("SC_CLK_TCK")
def backend_cpu():
    try:
        with open(f"/proc/{backend}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / tick

def synchronous(params):
    cursor.execute(insert_sql, params)

def platform(params):
    _execute(connection, insert_sql, params)

def in_statement(params):
    cursor.execute(in_statement_sql, params)

WAYS = ("before", "async", "now", "in-statement")
times = {name: {"all": [], "python": [], "backend": []} for name in WAYS}
def measure(name, store, params):
    cpu, started, thread = backend_cpu(), time.perf_counter(), time.thread_time()
    store(params)
    times[name]["python"].append(time.thread_time() - thread)
    times[name]["all"].append(time.perf_counter() - started)
    times[name]["backend"].append(backend_cpu() - cpu)

cursor.execute(
    "CREATE INDEX shadow_primary_before ON predictions_shadowprediction (primary_id)"
)
cursor.execute(
    "ALTER TABLE predictions_shadowprediction ADD CONSTRAINT shadow_primary_before_fk"
    " FOREIGN KEY (primary_id) REFERENCES predictions_prediction (id)"
    " DEFERRABLE INITIALLY DEFERRED"
)
for _ in range(P["warmup"]):
    synchronous(params_of(answers()))
for i in range(P["statements"]):
    for name in (("before", "async") if i % 2 == 0 else ("async", "before")):
        measure(name, synchronous if name == "before" else platform, params_of(answers()))
cursor.execute("ALTER TABLE predictions_shadowprediction DROP CONSTRAINT shadow_primary_before_fk")
cursor.execute("DROP INDEX shadow_primary_before")
for _ in range(P["warmup"]):
    platform(params_of(answers()))
for i in range(P["statements"]):
    for name in (("now", "in-statement") if i % 2 == 0 else ("in-statement", "now")):
        measure(name, platform if name == "now" else in_statement, params_of(answers()))
stored = ShadowPrediction.objects.count()
expected = (1 + 2 * P["warmup"] + 4 * P["statements"]) * P["rows"]
assert stored == expected, (stored, expected)
# Backend CPU comes in clock ticks (10 ms): its mean, not its median, says what a statement costs.
emit({
    name: {
        "all": statistics.median(t["all"]),
        "python": statistics.median(t["python"]),
        "backend": statistics.fmean(t["backend"]),
    }
    for name, t in times.items()
} | {"stored": stored})
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=34, help="rows per statement")
    p.add_argument("--statements", type=int, default=400, help="statements measured each way")
    p.add_argument("--warmup", type=int, default=50, help="statements before each part")
    p.add_argument("--predictions", type=int, default=400_000, help="predictions stored first")
    p.add_argument("--redis-db", type=int, default=6, help="Redis db of the production profile")
    args = p.parse_args(argv)
    if not 1 <= args.rows <= 100:
        p.error("--rows must be between 1 and 100 (the shadow thread stores at most 100)")
    if not 1 <= args.statements <= 5_000 or not 0 <= args.warmup <= 1_000:
        p.error("--statements must be between 1 and 5000, --warmup between 0 and 1000")
    needed = (1 + 2 * args.warmup + 4 * args.statements) * args.rows
    if not needed <= args.predictions <= 5_000_000:
        p.error(f"--predictions must be between {needed} (one per row stored) and 5000000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with platform_setup.instance("production", redis_db=args.redis_db) as instance:
        result = traffic_admin.run_snippet(
            instance.env,
            _MEASURE,
            rows=args.rows,
            statements=args.statements,
            warmup=args.warmup,
            predictions=args.predictions,
        )
    print(
        f"Storing {args.rows} shadow rows of iris in one statement on PostgreSQL, with "
        f"{args.predictions} predictions stored; {args.statements} statements each way; "
        "medians in ms per statement (backend: mean)"
    )
    print(f"{'way':<13}{'in all':>8}{'python':>8}{'backend':>9}")
    for way in ("before", "async", "now", "in-statement"):
        r = result[way]
        print(f"{way:<13}{r['all'] * 1e3:8.3f}{r['python'] * 1e3:8.3f}{r['backend'] * 1e3:9.3f}")
    before, now = result["before"], result["now"]
    print(
        f"{'now/before':<13}"
        + "".join(f"{now[k] / before[k]:7.2f}x " for k in ("all", "python", "backend"))
        + f"  ({result['stored']} rows stored, as many as sent)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
