"""PostgreSQL with django-prometheus's database metrics, counted by ``mlplatform.db.counting``."""

from django.db.backends.postgresql import base as postgresql
from django_prometheus.db.backends.postgresql import base

from mlplatform.db.counting import counting_cursor


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self):
        # As django-prometheus's own: psycopg builds every cursor of the connection from it.
        params = postgresql.DatabaseWrapper.get_connection_params(self)
        factory = params["cursor_factory"]
        params["cursor_factory"] = counting_cursor(factory, self.alias, self.vendor)
        return params
