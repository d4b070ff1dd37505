"""The background threads: the micro-batcher and the group commit."""

import asyncio
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from django.db import IntegrityError, connection

from accounts.models import User
from mlplatform.background import Batcher, GroupCommit


class Model:
    """A handler that records each batch it is called with, and can be held busy."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.busy = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, payloads: list) -> list:
        self.busy.set()
        assert self.release.wait(5)
        self.batches.append(payloads)
        return [f"answer to {p}" if p != "bad" else ValueError("bad row") for p in payloads]

    def hold(self) -> None:
        self.release.clear()
        self.busy.clear()


def test_an_idle_batcher_answers_a_request_at_once_without_waiting_for_others():
    model = Model()
    batcher = Batcher(model, max_size=64, name="test")
    started = time.monotonic()

    answer = batcher.submit("a").result(5)

    assert answer == "answer to a"
    assert model.batches == [["a"]]
    assert time.monotonic() - started < 2  # no wait for a batch to fill (64 rows never come)
    batcher.close()


def test_requests_that_queue_while_the_model_is_busy_are_answered_by_one_call():
    model = Model()
    batcher = Batcher(model, max_size=64, name="test")
    model.hold()
    first = batcher.submit("first")
    assert model.busy.wait(5)

    queued = [batcher.submit(f"r{i}") for i in range(10)]
    model.release.set()

    assert first.result(5) == "answer to first"
    assert [f.result(5) for f in queued] == [f"answer to r{i}" for i in range(10)]
    assert model.batches == [["first"], [f"r{i}" for i in range(10)]]
    batcher.close()


def test_a_batch_holds_at_most_max_size_rows_and_a_larger_request_runs_alone():
    model = Model()
    batcher = Batcher(model, max_size=4, name="test")
    model.hold()
    batcher.submit("first")
    assert model.busy.wait(5)

    sizes = [1, 2, 1, 5, 3]
    futures = [batcher.submit(f"s{size}", size=size) for size in sizes]
    model.release.set()
    for future in futures:
        future.result(5)

    assert model.batches[1:] == [["s1", "s2", "s1"], ["s5"], ["s3"]]
    batcher.close()


def test_one_bad_payload_fails_only_its_own_request():
    batcher = Batcher(Model(), max_size=8, name="test")
    model = batcher.handler
    model.hold()
    batcher.submit("first")
    assert model.busy.wait(5)
    good, bad, other = (batcher.submit(p) for p in ("good", "bad", "other"))
    model.release.set()

    assert good.result(5) == "answer to good"
    with pytest.raises(ValueError, match="bad row"):
        bad.result(5)
    assert other.result(5) == "answer to other"
    assert model.batches[1] == ["good", "bad", "other"]  # still one call
    batcher.close()


def test_a_request_cancelled_while_queued_is_left_out_of_its_batch():
    model = Model()
    batcher = Batcher(model, max_size=8, name="test")
    model.hold()
    batcher.submit("first")
    assert model.busy.wait(5)
    gone, kept = batcher.submit("gone"), batcher.submit("kept")

    assert gone.cancel()  # its caller's timeout passed
    model.release.set()

    assert kept.result(5) == "answer to kept"
    assert model.batches[1] == ["kept"]
    batcher.close()


def test_with_a_wait_a_batch_gathers_what_comes_within_it():
    model = Model()
    # A wait far longer than the test: the batch is run once full, not when the wait ends.
    batcher = Batcher(model, max_size=2, wait=30, name="test")

    first = batcher.submit("first")
    deadline = time.monotonic() + 5
    while batcher.queued():  # until the thread has taken it, and waits for more
        assert time.monotonic() < deadline
        time.sleep(0.005)
    second = batcher.submit("second")

    assert (first.result(5), second.result(5)) == ("answer to first", "answer to second")
    assert model.batches == [["first", "second"]]
    batcher.close()


def test_event_loop_requests_are_answered_on_the_loop_with_thread_requests_in_one_batch():
    model = Model()
    batcher = Batcher(model, max_size=8, name="test")
    model.hold()
    batcher.submit("first")
    assert model.busy.wait(5)
    from_thread = batcher.submit("thread")

    async def ask() -> list:
        pending = [batcher.asubmit(f"loop{i}") for i in range(3)]
        model.release.set()
        return await asyncio.gather(*pending)

    answers = async_to_sync(ask)()

    assert answers == ["answer to loop0", "answer to loop1", "answer to loop2"]
    assert from_thread.result(5) == "answer to thread"
    assert model.batches[1] == ["thread", "loop0", "loop1", "loop2"]
    batcher.close()


def _user(name: str) -> User:
    return User(username=name, password="!")


@pytest.mark.django_db(transaction=True)
def test_writes_of_concurrent_callers_are_committed_together():
    commit = GroupCommit()
    gate = threading.Event()
    commit.submit(call=lambda: gate.wait(5))  # the writer is busy with an earlier round
    futures = [commit.submit([_user(f"u{i}")]) for i in range(5)]
    seen = {}

    def look() -> None:  # a write of the same round: runs after its rows, before its commit
        seen["in_transaction"] = connection.in_atomic_block
        seen["rows"] = User.objects.filter(username__startswith="u").count()

    futures.append(commit.submit(call=look))
    gate.set()

    assert [future.result(5) for future in futures] == [None] * 6
    assert seen == {"in_transaction": True, "rows": 5}
    assert sorted(User.objects.values_list("username", flat=True)) == [f"u{i}" for i in range(5)]


@pytest.mark.django_db(transaction=True)
def test_a_row_that_breaks_a_constraint_fails_only_its_own_write():
    User.objects.create(username="taken")
    commit = GroupCommit()
    gate = threading.Event()
    commit.submit(call=lambda: gate.wait(5))
    ok, clash, other = (commit.submit([_user(n)]) for n in ("a", "taken", "b"))
    gate.set()

    assert ok.result(5) is None and other.result(5) is None
    with pytest.raises(IntegrityError):
        clash.result(5)
    assert sorted(User.objects.values_list("username", flat=True)) == ["a", "b", "taken"]


def test_inside_a_transaction_a_write_is_made_in_it_at_once(db):
    commit = GroupCommit()

    future = commit.submit([_user("inline")])

    assert future.done() and future.result() is None
    assert User.objects.filter(username="inline").exists()  # visible in this transaction
