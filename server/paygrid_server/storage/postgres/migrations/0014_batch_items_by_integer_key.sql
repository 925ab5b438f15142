-- PostgreSQL's items stay keyed by the batch's uid: migrations/sqlite/0014
-- keys SQLite's by an integer per batch (narrower rows and index entries for
-- SQLite's one writer). Both engines get the view reconciliation reads
-- (ledger_reconciliation.py): each item's channel key parts and charge.
CREATE VIEW batch_item_charges AS
    SELECT batch_uid, seq, attempt, status, channel, channel_reference, currency, amount_minor
    FROM batch_items;
