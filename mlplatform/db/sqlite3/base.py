"""django-prometheus's SQLite backend, with its counting cursor class built once.

django-prometheus builds a new cursor class (``ExportingCursorWrapper``) every time the SQLite
backend opens a cursor, which costs more than the query of a prediction; the class depends on
nothing but the backend's cursor class, alias and vendor, so it is built once per combination.
The metrics (``django_db_*``) are django-prometheus's own.
"""

import functools

from django_prometheus.db.backends.sqlite3 import base
from django_prometheus.db.common import ExportingCursorWrapper

DatabaseFeatures = base.DatabaseFeatures

_counting_cursor = functools.cache(ExportingCursorWrapper)


class DatabaseWrapper(base.DatabaseWrapper):
    def create_cursor(self, name=None):
        factory = _counting_cursor(self.CURSOR_CLASS, self.alias, self.vendor)
        return self.connection.cursor(factory=factory)
