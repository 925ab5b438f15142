"""SQLite writer micro-bench for SubmitBatch (issue 17 point 3): N batch items
through SQL shaped as the store's (insert a message at a time, mark a group,
save its results; a commit each, synchronous=FULL), one thread, its CPU per
item per phase, schema variants alternated round by round. The variants are
those measured for docs/performance.md's third pass ("main" is the schema as
of migration 0011; "known_prx" what migration 0012 made of it).

Usage (after scripts/setup):
  .venv/bin/python scripts/bench_batch_writer.py [items] [rounds] [variant,variant...]
"""
import os, sqlite3, sys, tempfile, time, statistics, functools
from paygrid_server.storage.sqlite.schema_migrations import migration_scripts
from paygrid_server.storage.sqlite.none_binding import bind_none_directly
from paygrid_server.storage.sqlite.batch_item_rows import chunks
from paygrid_server.storage.sqlite.connection import PRAGMAS
bind_none_directly()
N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
ONLY = sys.argv[3].split(",") if len(sys.argv) > 3 else None
MSG, GROUP = 500, 100
UID = "bat_01JABCDEFGHJKMNPQRSTVWXYZ0"

def inl(n): return ", ".join("?" * n)

COLS = ("seq, reference, payee, currency, amount_minor, requested_channel, requested_at_us, "
        "channel, status, attempt, group_no, channel_reference, failure_reason, failure_message, "
        "failure_decline_code, content_digest, {key}, submission")
RES = ("status", "attempt", "channel_reference", "failure_reason", "failure_message",
       "failure_decline_code", "version")

COUNTS_TABLE = ("CREATE TABLE batch_item_counts (batch_uid TEXT NOT NULL, status TEXT NOT NULL, "
                "n INTEGER NOT NULL, PRIMARY KEY (batch_uid, status)) STRICT, WITHOUT ROWID;")
TRIGGERS = COUNTS_TABLE + """
CREATE TRIGGER bi_count_ins AFTER INSERT ON batch_items BEGIN
 INSERT INTO batch_item_counts VALUES (new.batch_uid, new.status, 1)
 ON CONFLICT (batch_uid, status) DO UPDATE SET n = n + 1; END;
CREATE TRIGGER bi_count_upd AFTER UPDATE OF status ON batch_items WHEN old.status <> new.status BEGIN
 UPDATE batch_item_counts SET n = n - 1 WHERE batch_uid = old.batch_uid AND status = old.status;
 INSERT INTO batch_item_counts VALUES (new.batch_uid, new.status, 1)
 ON CONFLICT (batch_uid, status) DO UPDATE SET n = n + 1; END;
"""
INTKEY = """
ALTER TABLE batches ADD COLUMN item_key INTEGER;
CREATE UNIQUE INDEX batches_item_key ON batches (item_key);
CREATE TABLE bi2 AS SELECT * FROM batch_items WHERE 0;
DROP TABLE batch_items;
CREATE TABLE batch_items (
    batch_key INTEGER NOT NULL REFERENCES batches (item_key), seq INTEGER NOT NULL, reference TEXT NOT NULL, payee TEXT NOT NULL,
    currency TEXT NOT NULL, amount_minor INTEGER NOT NULL, requested_channel TEXT NOT NULL,
    requested_at_us INTEGER, channel TEXT NOT NULL, content_digest TEXT NOT NULL,
    submission INTEGER NOT NULL, status TEXT NOT NULL, attempt INTEGER NOT NULL,
    group_no INTEGER NOT NULL, channel_reference TEXT NOT NULL, failure_reason TEXT,
    failure_message TEXT, failure_decline_code TEXT, version INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_key, seq), UNIQUE (batch_key, reference)) STRICT;
CREATE INDEX batch_items_by_group ON batch_items (batch_key, group_no, seq) WHERE group_no <> 0;
"""
ONE_ROW = """
CREATE TABLE batch_item_counts (batch_uid TEXT PRIMARY KEY, received INTEGER NOT NULL DEFAULT 0,
 processing INTEGER NOT NULL DEFAULT 0, succeeded INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
 unknown INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0) STRICT, WITHOUT ROWID;
CREATE TRIGGER bi_count_ins AFTER INSERT ON batch_items BEGIN
 UPDATE batch_item_counts SET received = received + (new.status = 'RECEIVED'),
  processing = processing + (new.status = 'PROCESSING'), succeeded = succeeded + (new.status = 'SUCCEEDED'),
  failed = failed + (new.status = 'FAILED'), unknown = unknown + (new.status = 'UNKNOWN'),
  rejected = rejected + (new.status = 'REJECTED') WHERE batch_uid = new.batch_uid; END;
CREATE TRIGGER bi_count_upd AFTER UPDATE OF status ON batch_items WHEN old.status <> new.status BEGIN
 UPDATE batch_item_counts SET received = received + (new.status = 'RECEIVED') - (old.status = 'RECEIVED'),
  processing = processing + (new.status = 'PROCESSING') - (old.status = 'PROCESSING'),
  succeeded = succeeded + (new.status = 'SUCCEEDED') - (old.status = 'SUCCEEDED'),
  failed = failed + (new.status = 'FAILED') - (old.status = 'FAILED'),
  unknown = unknown + (new.status = 'UNKNOWN') - (old.status = 'UNKNOWN'),
  rejected = rejected + (new.status = 'REJECTED') - (old.status = 'REJECTED') WHERE batch_uid = new.batch_uid; END;
"""
VARIANTS = {
    "trig_row": ("DROP INDEX batch_items_by_status;" + ONE_ROW, "batch_uid", "row"),
    "trig_row_prx": ("DROP INDEX batch_items_by_status;" + ONE_ROW +
                  "CREATE INDEX batch_items_by_status ON batch_items (batch_uid, status, seq) "
                  "WHERE status NOT IN ('RECEIVED', 'SUCCEEDED');", "batch_uid", "row"),
    "main": ("", "batch_uid", None),
    "trig": ("DROP INDEX batch_items_by_status;" + TRIGGERS, "batch_uid", None),
    "stmt_sel": ("DROP INDEX batch_items_by_status;" + COUNTS_TABLE, "batch_uid", "select"),
    "stmt_known": ("DROP INDEX batch_items_by_status;" + COUNTS_TABLE, "batch_uid", "known"),
    "nostatus": ("DROP INDEX batch_items_by_status;", "batch_uid", None),
    "known_prx": ("DROP INDEX batch_items_by_status;" + COUNTS_TABLE +
                  "CREATE INDEX batch_items_by_status ON batch_items (batch_uid, status, seq) "
                  "WHERE status NOT IN ('RECEIVED', 'SUCCEEDED');", "batch_uid", "known"),
    "known_rare": ("DROP INDEX batch_items_by_status;" + COUNTS_TABLE +
                   "CREATE INDEX batch_items_by_status ON batch_items (batch_uid, status, seq) "
                   "WHERE status IN ('FAILED', 'UNKNOWN', 'REJECTED');", "batch_uid", "known"),
    "int_main": (INTKEY + "CREATE INDEX batch_items_by_status ON batch_items (batch_key, status, seq);",
                 "batch_key", None),
    "int_known_prx": (INTKEY + COUNTS_TABLE.replace("batch_uid TEXT", "batch_key INTEGER").replace("(batch_uid, status)", "(batch_key, status)") +
                      "CREATE INDEX batch_items_by_status ON batch_items (batch_key, status, seq) "
                      "WHERE status NOT IN ('RECEIVED', 'SUCCEEDED');", "batch_key", "known"),
}

def count_sql(key):
    return (f"INSERT INTO batch_item_counts VALUES (?, ?, ?) ON CONFLICT ({key}, status) "
            "DO UPDATE SET n = n + excluded.n")

def run(name):
    extra, key, counting = VARIANTS[name]
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "b.sqlite")
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        db.execute(f"PRAGMA {pragma}")
    for version, script in migration_scripts():
        if version < "0012":  # the variants start from 0011's schema
            db.executescript(script)
    db.executescript(extra)
    db.execute("INSERT INTO batches (tenant_id, batch_id, uid, payer, grouping, max_group_size, parallelism, "
               "fingerprint, status, submissions, created_at_us, submission_started_at_us) "
               "VALUES ('t', 'b', ?, 'p', 'CURRENCY', 100, 4, 'f', 'RECEIVING', 1, 1, 1)", (UID,))
    if key == "batch_key":
        db.execute("UPDATE batches SET item_key = 7")
    if counting == "row":
        db.execute("INSERT INTO batch_item_counts (batch_uid) VALUES (?)", (UID,))
        counting = None
    kv = UID if key == "batch_uid" else 7
    cols = COLS.format(key=key)
    ncols = cols.count(",") + 1
    ins = functools.cache(lambda n: f"INSERT INTO batch_items ({cols}) VALUES " + ", ".join([f"({inl(ncols)})"] * n))
    upd = functools.cache(lambda n: (f"WITH state (seq, {', '.join(RES)}) AS (VALUES {', '.join([f'({inl(1 + len(RES))})'] * n)}) "
                      f"UPDATE batch_items SET {', '.join(f'{c} = state.{c}' for c in RES)} "
                      f"FROM state WHERE batch_items.{key} = ? AND batch_items.seq = state.seq"))
    csql = count_sql(key)
    def count(stmt_status_from, chunk, new_status, sel_sql=None):
        if counting == "select":
            moved = db.execute(sel_sql, (kv, *chunk)).fetchall()
            for st, n in moved:
                db.execute(csql, (kv, st, -n))
            db.execute(csql, (kv, new_status, len(chunk)))
        elif counting == "known":
            if stmt_status_from:
                db.execute(csql, (kv, stmt_status_from, -len(chunk)))
            db.execute(csql, (kv, new_status, len(chunk)))
    sel = lambda n: f"SELECT status, count(*) FROM batch_items WHERE {key} = ? AND seq IN ({inl(n)}) GROUP BY status"
    t = {"insert": 0.0, "mark": 0.0, "save": 0.0}
    seq = 0
    for m in range(0, N, MSG):
        rows = [(i + 1, f"r{i:08d}", f"payee_{i:08d}", "EUR", 100 + i % 1000, "", None, "sim", "RECEIVED",
                 0, 0, "", None, None, None, "d" * 32, kv, 1) for i in range(m, min(N, m + MSG))]
        c0 = time.thread_time()
        db.execute("BEGIN IMMEDIATE")
        for ch in chunks(rows):
            db.execute(ins(len(ch)), [v for r in ch for v in r])
            if counting: db.execute(csql, (kv, "RECEIVED", len(ch)))
        db.execute("COMMIT")
        c1 = time.thread_time(); t["insert"] += c1 - c0
        for g in range(m, min(N, m + MSG), GROUP):
            seqs = list(range(g + 1, min(N, g + GROUP) + 1))
            gno = g // GROUP + 1
            c0 = time.thread_time()
            db.execute("BEGIN IMMEDIATE")
            db.execute(f"INSERT INTO batch_groups ({'batch_uid' if True else key}, group_no, group_key, size, started_at_us) VALUES (?, ?, ?, ?, ?)",
                       (UID, gno, "EUR", len(seqs), 1))
            for ch in chunks(seqs):
                if counting == "select": count(None, ch, "PROCESSING", sel(len(ch)))
                db.execute(f"UPDATE batch_items SET status = 'PROCESSING', group_no = ? WHERE {key} = ? AND seq IN ({inl(len(ch))})",
                           (gno, kv, *ch))
                if counting == "known": count("RECEIVED", ch, "PROCESSING")
            db.execute("COMMIT")
            c1 = time.thread_time(); t["mark"] += c1 - c0
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE batch_groups SET completed_at_us = 2 WHERE batch_uid = ? AND group_no = ? AND completed_at_us IS NULL", (UID, gno))
            for ch in chunks(seqs):
                if counting == "select": count(None, ch, "SUCCEEDED", sel(len(ch)))
                params = []
                for s in ch:
                    params += (s, "SUCCEEDED", 1, f"ch_{s:010d}", None, None, None, gno)
                params.append(kv)
                db.execute(upd(len(ch)), params)
                if counting == "known": count("PROCESSING", ch, "SUCCEEDED")
            db.execute("COMMIT")
            t["save"] += time.thread_time() - c1
    if "row" in name:
        got = db.execute("SELECT * FROM batch_item_counts").fetchall()
        assert got == [(UID, 0, 0, N, 0, 0, 0)], got
    elif counting or "trig" in name:
        got = dict(db.execute("SELECT status, n FROM batch_item_counts WHERE n <> 0").fetchall())
        assert got == {"SUCCEEDED": N}, got
    db.close()
    for f in os.listdir(folder): os.remove(os.path.join(folder, f))
    os.rmdir(folder)
    return {k: v * 1e6 / N for k, v in t.items()}

names = ONLY or list(VARIANTS)
res = {n: [] for n in names}
for r in range(ROUNDS):
    for n in names:
        x = run(n); x["total"] = sum(x.values()); res[n].append(x)
        print(r, n, {k: round(v, 2) for k, v in x.items()}, flush=True)
print("medians (us/item):")
for n in names:
    print(f"{n:14}", {k: round(statistics.median(x[k] for x in res[n]), 2) for k in res[n][0]})
