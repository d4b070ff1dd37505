"""SQLite with django-prometheus's database metrics, its cursor class made once.

django-prometheus's SQLite backend builds a new cursor class (``ExportingCursorWrapper``) for
every cursor: a class and its methods each time, a reference cycle that only the garbage
collector's full passes free. Those passes walk every object of the process, so this backend
makes the class once per alias.
"""

import functools

from django.db.backends.sqlite3 import base
from django_prometheus.db.backends.sqlite3.base import DatabaseFeatures  # noqa: F401
from django_prometheus.db.backends.sqlite3.base import DatabaseWrapper as PrometheusWrapper
from django_prometheus.db.common import ExportingCursorWrapper


@functools.cache
def _cursor_class(alias: str, vendor: str) -> type:
    return ExportingCursorWrapper(base.SQLiteCursorWrapper, alias, vendor)


class DatabaseWrapper(PrometheusWrapper):
    def create_cursor(self, name=None):
        return self.connection.cursor(factory=_cursor_class(self.alias, self.vendor))
