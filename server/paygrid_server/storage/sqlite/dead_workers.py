"""What dead processes left in a SQLite file that workers share, and how
the living take it back: a dead worker's group and stream leases expired
(its share of each batch's parallelism goes to the live ones at once),
batches no live worker streams shown INTERRUPTED, and groups a lone server
left mid-charge queued again. Split from the queue (sqlite/group_queue.py),
which calls these inside its own units of work (one BEGIN IMMEDIATE each):
they take the time as an argument, so the queue's clock is theirs.
"""

from __future__ import annotations

import sqlite3

from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.storage.sqlite.batch_events import write_batch_event
from paygrid_server.storage.sqlite.batch_item_key import OF_BATCH

# A batch inserted but never started is between its INSERT and its
# submission lease on a live worker: abandoned only after this (as on PostgreSQL).
UNSTARTED_GRACE_US = 60_000_000
# Workers not seen for this long are forgotten by the sweep.
FORGET_REPLICAS_AFTER_US = 3_600_000_000


def expire_leases(db: sqlite3.Connection, owner: str | None) -> int:
    """Expires the group and stream leases of a dead worker (None: of every
    worker) and forgets it, so its share of each batch's parallelism goes to
    the live ones now; returns the groups whose lease it expired."""
    of_owner, params = ("= ?", (owner,)) if owner is not None else ("IS NOT NULL", ())
    groups = db.execute("UPDATE batch_groups SET lease_expires_at_us = 0 "
                        "WHERE status <> 'DONE' AND status = 'LEASED' "
                        f"AND lease_owner {of_owner}", params).rowcount
    db.execute("UPDATE batches SET submission_lease_expires_at_us = 0 "
               f"WHERE submission_owner {of_owner}", params)
    db.execute(f"DELETE FROM batch_replicas WHERE owner {of_owner}", params)
    return groups


def interrupt_abandoned_batches(db: sqlite3.Connection, encoder: SnapshotEncoder,
                                now_us: int) -> int:
    """Shows INTERRUPTED every batch whose stream's worker died (submission
    lease free or expired) and forgets long-gone workers; returns the
    batches interrupted."""
    db.execute("DELETE FROM batch_replicas WHERE seen_at_us < ?",
               (now_us - FORGET_REPLICAS_AFTER_US,))
    stopped = db.execute(
        "SELECT uid, status FROM batches WHERE status IN ('RECEIVING', 'PROCESSING') "
        "AND (submission_owner IS NULL OR submission_lease_expires_at_us < ?) "
        "AND (submissions > 0 OR created_at_us < ?)",
        (now_us, now_us - UNSTARTED_GRACE_US)).fetchall()
    for uid, status_before in stopped:
        db.execute(
            "UPDATE batches SET status = 'INTERRUPTED', wall_us_before = wall_us_before + "
            "max(0, coalesce((SELECT max(completed_at_us) FROM batch_groups g "
            "        WHERE g.batch_uid = batches.uid) - submission_started_at_us, 0)) "
            "WHERE uid = ?", (uid,))
        write_batch_event(db, encoder, uid, status_before)
    return len(stopped)


def adopt_lone_server_groups(db: sqlite3.Connection, batch_uid: str) -> None:
    """Groups a lone server (SingleProcessGroupQueue) left mid-charge keep
    their row's default status DONE with no completion: queued again as
    taken over (claim count from 1), so their claimant settles the items
    left PROCESSING with their channel before anything else."""
    db.execute(
        "UPDATE batch_groups SET status = 'QUEUED', lease_count = max(lease_count, 1), "
        "lease_owner = NULL, lease_expires_at_us = 0 "
        "WHERE batch_uid = ? AND status = 'DONE' AND completed_at_us IS NULL AND group_no IN "
        f"(SELECT group_no FROM batch_items WHERE {OF_BATCH} AND status = 'PROCESSING')",
        (batch_uid, batch_uid))
