"""Every explicit limit of the payment domain, in one place.

Limits are part of the API contract (docs/api/limits.md lists them); a request past
one is rejected at the edge with a field violation, never truncated.
"""

MAX_LEGS_PER_PAYMENT = 16
# 10^15 minor units: ten trillion dollars in USD. Far above any real payment,
# far below int64, so sums over legs and refunds can never overflow storage.
MAX_AMOUNT_MINOR = 10**15

IDEMPOTENCY_KEY_MAX_CHARS = 255
PARTY_ID_MAX_CHARS = 128  # payer, payee
REFERENCE_MAX_CHARS = 140  # ISO 20022 unstructured remittance information
CHANNEL_NAME_MAX_CHARS = 64
PAYMENT_ID_MAX_CHARS = 64
METADATA_MAX_ENTRIES = 32
METADATA_KEY_MAX_CHARS = 64
METADATA_VALUE_MAX_CHARS = 512

LIST_PAGE_SIZE_DEFAULT = 50
LIST_PAGE_SIZE_MAX = 100
PAGE_TOKEN_MAX_CHARS = 512

# Charge attempts on one channel for a transient error before failing over.
CHARGE_TRIES_PER_CHANNEL = 2
# Channels tried for one routed leg, the first included.
MAX_CHANNELS_PER_LEG = 3
# Budget for a payment when the caller sets no deadline.
DEFAULT_PAYMENT_BUDGET_MS = 10_000
MAX_PAYMENT_BUDGET_MS = 60_000
# Longer than any call drives its payment or refund: the leg budget, then
# settlement and reversal calls (each bounded by its own timeout). Until then
# a payment another replica stored may still be running there.
HANDOFF_AFTER_MS = MAX_PAYMENT_BUDGET_MS + 30_000
# Part of the caller's deadline kept back to persist and answer: a tenth of
# it, at least RESPONSE_RESERVE_MS. A fixed 30 ms is too little on a loaded
# machine for a long deadline (a PostgreSQL commit alone can take that), and
# the caller would get DEADLINE_EXCEEDED for a payment that did finish.
RESPONSE_RESERVE_MS = 30
RESPONSE_RESERVE_PERCENT = 10
# Below this much budget a payment is not started at all.
MIN_PAYMENT_BUDGET_MS = 20
# The shortest call deadline accepted: the minimum budget plus the reserve.
MIN_CALL_DEADLINE_MS = MIN_PAYMENT_BUDGET_MS + RESPONSE_RESERVE_MS
# Budget for each call that settles an outcome (GetCharge, Void, refund):
# these run after the caller's deadline if need be, so they have their own.
SETTLEMENT_CALL_TIMEOUT_MS = 2_000
SETTLEMENT_TRIES = 3
# Payments a restarted server settles at once, in the background.
RECOVERY_CONCURRENCY = 16

# Batches
BATCH_ID_MAX_CHARS = 64
BATCH_REFERENCE_MAX_CHARS = 64
BATCH_MAX_ITEMS = 5_000_000
BATCH_MAX_ITEMS_PER_MESSAGE = 1_000
BATCH_DEFAULT_GROUP_SIZE = 100
BATCH_MAX_GROUP_SIZE = 1_000
BATCH_DEFAULT_PARALLELISM = 4
BATCH_MAX_PARALLELISM = 16
# Distinct grouping keys with a group still filling; past it the fullest seals.
BATCH_MAX_OPEN_GROUPS = 64
# Items charged at once inside one group.
BATCH_ITEM_CONCURRENCY_PER_GROUP = 16
# Arriving items are stored in one transaction per this many, or after
# BATCH_FLUSH_IDLE_MS without a new message.
BATCH_FLUSH_ITEMS = 512
BATCH_FLUSH_IDLE_MS = 5
# A batch step waits at most this long for this process's payments
# (domain/payments_first.py): past it a batch under constant payment
# traffic would hardly move.
BATCH_YIELD_TO_PAYMENTS_MAX_MS = 1_000
# Messages buffered between the network and the batch pipeline.
BATCH_INBOX_MESSAGES = 4
# Items per message of ListBatchItems and per chunk when resuming.
BATCH_PAGE_ITEMS = 1_000

# ListEvents: page sizes and the longest type prefix (longer than any type).
EVENTS_PAGE_SIZE_DEFAULT = 100
EVENTS_PAGE_SIZE_MAX = 1000
EVENT_TYPE_PREFIX_MAX_CHARS = 128
EVENT_ID_MAX_CHARS = 64
# A subject is an aggregate id: a payment_id or a batch_id.
EVENT_SUBJECT_MAX_CHARS = max(PAYMENT_ID_MAX_CHARS, BATCH_ID_MAX_CHARS)
# A named consumer (AckEvents): 1-64 of a-z, 0-9, '.', '_', '-'.
EVENT_CONSUMER_PATTERN = r"[a-z0-9._-]{1,64}"
# WatchEvents: events read per round, and how long a quiet stream waits
# before a keep-alive frame (proxies drop streams idle for a minute or so).
WATCH_READ_BATCH = 500
WATCH_KEEPALIVE_S = 15.0
