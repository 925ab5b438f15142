"""Storage faults: a full disk and a database file that turns read-only
under the running server. Pay, RefundPayment and SubmitBatch get
UNAVAILABLE (ErrorInfo STORAGE_UNAVAILABLE, with the fault), never UNKNOWN
or INTERNAL; no channel is called for a payment that could not be recorded
first; a charge whose outcome could not be written stays PROCESSING and the
resolver settles it once the fault is gone; the writer thread lives on, and
afterwards the file passes integrity_check and agrees with the channels'
ledgers.

The faults are real, not simulated in paygrid's code:
- disk full: the database lives on its own small tmpfs, filled to the last
  page with a filler file, so SQLite's write() gets ENOSPC exactly as on a
  full disk (SQLITE_FULL). The WAL is checkpointed and truncated first, so
  the next commit has to allocate. Needs mount(2) (CAP_SYS_ADMIN), as the
  test runs here and in CI; skipped with the reason where it is refused.
- read-only: the database file and its WAL are made immutable (chattr +i),
  which stops writes to files already open, for root too (chmod would not,
  and a read-only remount is refused while the server holds the files open
  for writing). SQLite sees EPERM on write(), as it would see EROFS after
  the kernel remounts a failing disk read-only.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import subprocess
from pathlib import Path

import grpc
import pytest

from paygrid.v1 import batch_service_pb2 as pb_batch
from paygrid.v1 import payment_service_pb2 as pb
from tests.support.batch_client import batch_stub, chunk, collect, header, open_stream, submit, tx
from tests.conftest import pay_request, rich_status
from tests.support.server_process import wait_for

# Faults of the SQLite file itself (PostgreSQL's own storage is its server's).
pytestmark = pytest.mark.sqlite_only

DISK_SIZE = "8m"
FILL_CHUNK_BYTES = 64 * 1024


class SmallDisk:
    """A tmpfs of DISK_SIZE that can be filled up and freed again."""

    def __init__(self, mount_point: Path) -> None:
        self.path = mount_point
        self._filler = mount_point / "filler"

    def fill(self, database: Path) -> None:
        # An empty WAL: the next commit must grow it, so it must allocate.
        with sqlite3.connect(database) as db:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, "the checkpoint was blocked by a reader"
        block = b"\0" * FILL_CHUNK_BYTES
        filler = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            size = len(block)
            while size:  # down to single bytes: not one free byte left
                try:
                    os.write(filler, block[:size])
                except OSError as error:
                    assert error.errno == errno.ENOSPC, error
                    size //= 2
        finally:
            os.close(filler)

    def free(self) -> None:
        self._filler.unlink()


@pytest.fixture
def small_disk(tmp_path: Path):
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield SmallDisk(mount_point)
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


class ReadOnlyFiles:
    def __init__(self, database: Path) -> None:
        self.files = [database, database.with_name(database.name + "-wal")]

    def _chattr(self, flag: str) -> subprocess.CompletedProcess:
        return subprocess.run(["chattr", flag, *map(str, self.files)], capture_output=True,
                              text=True)

    def make_read_only(self) -> None:
        done = self._chattr("+i")
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {done.stderr.strip()}")

    def make_writable(self) -> None:
        self._chattr("-i")


def assert_storage_unavailable(error: grpc.aio.AioRpcError, fault: str, words: str) -> None:
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
    info = rich_status(error)["ErrorInfo"]
    assert (info.reason, info.metadata["fault"]) == ("STORAGE_UNAVAILABLE", fault)
    assert rich_status(error)["RetryInfo"].retry_delay.ToMilliseconds() == 1_000
    assert words in error.details(), error.details()


def assert_consistent(paygrid) -> None:
    """integrity_check passes and the file agrees with every channel's ledger:
    a captured charge for each SUCCEEDED leg, and no other capture."""
    assert paygrid.rows("PRAGMA integrity_check") == [("ok",)]
    succeeded = {(f"{payment_id}.{index}", channel_name) for payment_id, index, channel_name
                 in paygrid.rows("SELECT payment_id, leg_index, channel FROM payment_legs "
                                 "WHERE status = 'SUCCEEDED'")}
    captured = {(charge.idempotency_key, name) for name, (_, sim) in paygrid.app.simulators.items()
                for charge in sim.ledger.captured() if charge.idempotency_key.startswith("pay_")}
    assert captured == succeeded


async def pay_fails(paygrid, key: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.Pay(pay_request(key), timeout=30)
    return error.value


async def refund_fails(paygrid, payment_id: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.RefundPayment(pb.RefundPaymentRequest(
            payment_id=payment_id, idempotency_key="refund-1"), timeout=30)
    return error.value


async def batch_fails(paygrid, batch_id: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await submit(batch_stub(paygrid.channel), header(batch_id), chunk(tx("r1")), timeout=30)
    return error.value


async def test_a_full_disk_refuses_what_it_cannot_record_and_nothing_is_charged(
        small_disk, start_paygrid) -> None:
    paygrid = await start_paygrid(database_path=small_disk.path / "paygrid.sqlite3")
    before = (await paygrid.stub.Pay(pay_request("k-before"), timeout=30)).payment
    assert before.status == pb.PAYMENT_STATUS_SUCCEEDED

    small_disk.fill(paygrid.database)
    assert_storage_unavailable(await pay_fails(paygrid, "k-full"), "DISK_FULL", "disk is full")
    assert_storage_unavailable(await refund_fails(paygrid, before.payment_id), "DISK_FULL",
                               "disk is full")
    assert_storage_unavailable(await batch_fails(paygrid, "b-full"), "DISK_FULL", "disk is full")
    # Not recorded, so never sent: the channels saw one charge and no refund.
    assert len(paygrid.captured_everywhere()) == 1
    assert not any(sim.ledger.refunds for _, sim in paygrid.app.simulators.values())

    small_disk.free()
    # The writer thread lived through it: the same keys now simply work.
    again = (await paygrid.stub.Pay(pay_request("k-full"), timeout=30)).payment
    assert again.status == pb.PAYMENT_STATUS_SUCCEEDED
    refund = await paygrid.stub.RefundPayment(pb.RefundPaymentRequest(
        payment_id=before.payment_id, idempotency_key="refund-1"), timeout=30)
    assert refund.refund.status == pb.REFUND_STATUS_SUCCEEDED
    reply = await submit(batch_stub(paygrid.channel), header("b-full"), chunk(tx("r1")),
                         timeout=30)
    assert reply.summary.counts.succeeded == 1
    assert_consistent(paygrid)


async def test_an_outcome_the_full_disk_could_not_take_is_settled_once_space_is_back(
        small_disk, start_paygrid) -> None:
    paygrid = await start_paygrid(database_path=small_disk.path / "paygrid.sqlite3",
                                  recovery_interval_ms=100)
    card = paygrid.simulator("card")
    card.faults.hold_charges()  # the disk fills while the charge is out
    call = asyncio.ensure_future(paygrid.stub.Pay(pay_request("k-late"), timeout=30))
    # Recorded (a Charge is only sent after the payment is on disk), now charging.
    await asyncio.wait_for(card.faults.held(1), 60)
    small_disk.fill(paygrid.database)
    card.faults.release_charges()

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert_storage_unavailable(error.value, "DISK_FULL", "disk is full")
    (charge,) = paygrid.ledger("card").captured()  # the money moved; its record waits
    assert paygrid.rows("SELECT status FROM payments") == [("PROCESSING",)]

    small_disk.free()
    await wait_for(lambda: paygrid.rows("SELECT status FROM payments") == [("SUCCEEDED",)],
                   "the resolver to settle the payment", timeout_s=60)
    replay = (await paygrid.stub.Pay(pay_request("k-late"), timeout=30)).payment
    assert replay.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert replay.legs[0].channel_reference == charge.charge_id
    assert paygrid.ledger("card").charge_requests[charge.idempotency_key] == 1
    assert_consistent(paygrid)


async def test_a_database_turned_read_only_refuses_writes_clearly_then_recovers(
        start_paygrid) -> None:
    paygrid = await start_paygrid()
    before = (await paygrid.stub.Pay(pay_request("k-before"), timeout=30)).payment
    files = ReadOnlyFiles(paygrid.database)
    files.make_read_only()
    try:
        assert_storage_unavailable(await pay_fails(paygrid, "k-ro"), "READ_ONLY", "read-only")
        assert_storage_unavailable(await refund_fails(paygrid, before.payment_id), "READ_ONLY",
                                   "read-only")
        assert_storage_unavailable(await batch_fails(paygrid, "b-ro"), "READ_ONLY", "read-only")
        # Reads still work.
        got = await paygrid.stub.GetPayment(pb.GetPaymentRequest(payment_id=before.payment_id))
        assert got.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
        assert len(paygrid.captured_everywhere()) == 1
        assert not any(sim.ledger.refunds for _, sim in paygrid.app.simulators.values())
    finally:
        files.make_writable()

    again = (await paygrid.stub.Pay(pay_request("k-ro"), timeout=30)).payment
    assert again.status == pb.PAYMENT_STATUS_SUCCEEDED
    refund = await paygrid.stub.RefundPayment(pb.RefundPaymentRequest(
        payment_id=before.payment_id, idempotency_key="refund-1"), timeout=30)
    assert refund.refund.status == pb.REFUND_STATUS_SUCCEEDED
    assert_consistent(paygrid)


async def test_a_batch_whose_results_the_full_disk_cannot_take_ends_unavailable_and_resumes(
        small_disk, start_paygrid) -> None:
    paygrid = await start_paygrid(database_path=small_disk.path / "paygrid.sqlite3")
    card = paygrid.simulator("card")
    card.faults.hold_charges()  # the disk fills while the charges are out
    stub = batch_stub(paygrid.channel)
    call, outgoing = open_stream(stub)
    await outgoing.put(header("b-mid"))
    await outgoing.put(chunk(tx("r1"), tx("r2")))
    await outgoing.put(None)
    # Both items stored and sent to the channel; their results not yet stored.
    await card.wait_until(lambda: card.charges_in_progress == 2, "the charges held")
    small_disk.fill(paygrid.database)
    card.faults.release_charges()

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await collect(call)
    assert_storage_unavailable(error.value, "DISK_FULL", "disk is full")
    assert len(paygrid.ledger("card").captured()) == 2

    small_disk.free()
    # Resubmitting settles the charged items with the channel: none is paid twice.
    reply = await submit(stub, header("b-mid"), chunk(tx("r1"), tx("r2")), timeout=30)
    assert reply.summary.counts.succeeded == 2
    assert {r.status for r in reply.results.values()} == {pb_batch.BATCH_ITEM_STATUS_SUCCEEDED}
    ledger = paygrid.ledger("card")
    assert len(ledger.captured()) == 2
    assert all(count == 1 for count in ledger.charge_requests.values())
    assert paygrid.rows("PRAGMA integrity_check") == [("ok",)]
