"""The workers' shared payment counts (worker_payment_counts.py): each
worker sees the others' callers waiting for payments, never its own, and
a dead worker's count is gone. Two views over the supervisor's memfd
stand for two workers here; test_workers_payments_first.py runs it
across real processes."""

from __future__ import annotations

import os

from paygrid_server.worker_payment_counts import (
    COUNTS_FD_ENV,
    WORKER_INDEX_ENV,
    SiblingPaymentCounts,
    WorkerPaymentCounts,
    sibling_payment_counts,
)


def test_each_worker_sees_the_others_counts_and_not_its_own() -> None:
    board = WorkerPaymentCounts(3)
    try:
        workers = [SiblingPaymentCounts(board.fd, index) for index in range(3)]
        workers[0].publish(2)
        workers[2].publish(5)
        assert [w.running() for w in workers] == [5, 7, 2]
        workers[2].publish(0)
        assert [w.running() for w in workers] == [0, 2, 2]
    finally:
        board.close()


def test_a_dead_worker_s_count_is_cleared_by_the_supervisor_and_by_its_successor() -> None:
    board = WorkerPaymentCounts(2)
    try:
        survivor, dying = SiblingPaymentCounts(board.fd, 0), SiblingPaymentCounts(board.fd, 1)
        dying.publish(3)
        assert survivor.running() == 3
        board.clear(1)
        assert survivor.running() == 0
        dying.publish(4)  # died before the supervisor could clear its slot
        SiblingPaymentCounts(board.fd, 1)  # its successor starts
        assert survivor.running() == 0
    finally:
        board.close()


def test_a_worker_finds_its_slot_in_its_environment_and_a_lone_server_has_none(
        monkeypatch) -> None:
    monkeypatch.delenv(COUNTS_FD_ENV, raising=False)
    monkeypatch.delenv(WORKER_INDEX_ENV, raising=False)
    assert sibling_payment_counts() is None
    board = WorkerPaymentCounts(2)
    try:
        other = SiblingPaymentCounts(board.fd, 0)
        other.publish(1)
        monkeypatch.setenv(COUNTS_FD_ENV, str(os.dup(board.fd)))
        monkeypatch.setenv(WORKER_INDEX_ENV, "1")
        worker = sibling_payment_counts()
        assert worker is not None and worker.running() == 1
        worker.publish(6)
        assert other.running() == 6
        assert COUNTS_FD_ENV not in os.environ  # read once, not handed further down
    finally:
        board.close()
