"""Sharing a web process's pooled database connections among threads that wait for each other."""

from django.db import connection


def give_back_connection() -> None:
    """Return this thread's pooled database connection to its pool, when that is safe.

    Called before waiting for another thread that may need a connection from the same pool:
    threads that waited holding theirs could hold the whole pool while the one they wait for
    waits for a connection until the pool's timeout. Inside a transaction the connection is
    kept (closing it would end the transaction); the thread borrows a connection again on its
    next query. Without a pool (SQLite, or the pool off) each thread has a connection of its
    own and there is nothing to give back.
    """
    if getattr(connection, "pool", None) is not None and not connection.in_atomic_block:
        connection.close()
