"""django-prometheus's database metrics, recorded with less work per statement.

django-prometheus's cursor wrapper looks up its label children (a lock and a sort of the
label names each time), and builds a timer and an exception counter object, for every
statement. The metrics do not change with the statement, only with the connection's alias
and vendor, so this cursor class is built once per (cursor class, alias, vendor) with its
children bound. The metrics are django-prometheus's own (``django_db_*``): same names, labels
and meaning.
"""

import functools
import time

from django_prometheus.db import (
    errors_total,
    execute_many_total,
    execute_total,
    query_duration_seconds,
)


@functools.cache
def counting_cursor(cursor_class: type, alias: str, vendor: str) -> type:
    """``cursor_class`` counting statements, errors by type and duration."""
    executed = execute_total.labels(alias, vendor)
    executed_many = execute_many_total.labels(alias, vendor)
    duration = query_duration_seconds.labels(alias, vendor)

    def failed(exc: BaseException) -> None:
        errors_total.labels(alias, vendor, type(exc).__name__).inc()

    class CountingCursor(cursor_class):
        def execute(self, *args, **kwargs):
            executed.inc()
            started = time.perf_counter()
            try:
                return super().execute(*args, **kwargs)
            except BaseException as exc:
                failed(exc)
                raise
            finally:
                duration.observe(time.perf_counter() - started)

        def executemany(self, query, param_list, *args, **kwargs):
            executed.inc(len(param_list))
            executed_many.inc(len(param_list))
            started = time.perf_counter()
            try:
                return super().executemany(query, param_list, *args, **kwargs)
            except BaseException as exc:
                failed(exc)
                raise
            finally:
                duration.observe(time.perf_counter() - started)

    CountingCursor.__name__ = CountingCursor.__qualname__ = f"Counting{cursor_class.__name__}"
    return CountingCursor
