"""SQLite with django-prometheus's database metrics, counted by ``mlplatform.db.counting``."""

from django_prometheus.db.backends.sqlite3 import base

from mlplatform.db.counting import counting_cursor

DatabaseFeatures = base.DatabaseFeatures


class DatabaseWrapper(base.DatabaseWrapper):
    def create_cursor(self, name=None):
        factory = counting_cursor(self.CURSOR_CLASS, self.alias, self.vendor)
        return self.connection.cursor(factory=factory)
