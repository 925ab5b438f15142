"""The limits are part of the API contract: docs/api/ states them (the
Limits table in docs/api/limits.md, figures in payments, batches and
errors), so the docs and limits.py must say the same, and the figures derived from one
another must hold together. Limits are enforced at and past their bounds
in test_request_validation.py, test_batch_grouping.py and test_bad_input.py."""

from __future__ import annotations

from pathlib import Path

from paygrid_server.domain.model import limits

# The repository root, wherever in tests/ this file lives.
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
API_DOCS = ROOT / "docs" / "api"
LIMITS_TABLE = (API_DOCS / "limits.md").read_text()
API_TEXT = "\n".join(page.read_text() for page in sorted(API_DOCS.glob("*.md")))


def limits_row(what: str) -> str:
    """The value column of the Limits table's row for `what`."""
    for line in LIMITS_TABLE.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] == what:
            return cells[1]
    raise AssertionError(f"no Limits row for {what!r} in docs/api/limits.md")


def test_the_limits_table_states_limits_py() -> None:
    assert limits_row("legs per payment") == f"1 to {limits.MAX_LEGS_PER_PAYMENT}"
    assert limits.MAX_AMOUNT_MINOR == 10**15
    assert limits_row("`amount_minor`").startswith("1 to 10^15 ")
    assert limits_row("`idempotency_key`").startswith(
        f"1 to {limits.IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII")
    assert limits_row("`payer`, `payee`").startswith(f"1 to {limits.PARTY_ID_MAX_CHARS} ")
    assert limits_row("`reference`, refund `reason`") == (
        f"up to {limits.REFERENCE_MAX_CHARS} characters")
    assert limits_row("`metadata`") == (
        f"up to {limits.METADATA_MAX_ENTRIES} entries; keys 1 to "
        f"{limits.METADATA_KEY_MAX_CHARS} characters, values up to "
        f"{limits.METADATA_VALUE_MAX_CHARS}")
    assert limits_row("`page_size`").startswith(
        f"0 means {limits.LIST_PAGE_SIZE_DEFAULT}; above {limits.LIST_PAGE_SIZE_MAX} means "
        f"{limits.LIST_PAGE_SIZE_MAX};")
    assert limits_row("batch: `batch_id`").startswith(f"1 to {limits.BATCH_ID_MAX_CHARS} ")
    assert limits_row("batch: items").startswith(f"at most {limits.BATCH_MAX_ITEMS:,} per batch")
    assert limits_row("batch: transactions per message").startswith(
        f"1 to {limits.BATCH_MAX_ITEMS_PER_MESSAGE} ")
    assert limits_row("batch: `reference`").startswith(
        f"1 to {limits.BATCH_REFERENCE_MAX_CHARS} characters")
    assert limits_row("batch: `max_group_size`") == (
        f"0 means {limits.BATCH_DEFAULT_GROUP_SIZE}; at most {limits.BATCH_MAX_GROUP_SIZE}")
    assert limits_row("batch: `parallelism` (groups at once)") == (
        f"0 means {limits.BATCH_DEFAULT_PARALLELISM}; at most {limits.BATCH_MAX_PARALLELISM}")
    assert limits_row("batch: groups still filling").startswith(
        f"at most {limits.BATCH_MAX_OPEN_GROUPS} keys;")
    assert limits_row("batch: items charged at once in a group") == (
        str(limits.BATCH_ITEM_CONCURRENCY_PER_GROUP))


def test_the_api_docs_state_the_deadline_figures() -> None:
    assert limits.RESPONSE_RESERVE_MS == 30 and limits.MIN_PAYMENT_BUDGET_MS == 20
    assert limits.MIN_CALL_DEADLINE_MS == limits.MIN_PAYMENT_BUDGET_MS + \
        limits.RESPONSE_RESERVE_MS == 50
    assert (f"minus {limits.RESPONSE_RESERVE_PERCENT}% of it, at least {limits.RESPONSE_RESERVE_MS} ms, "
            "kept back to persist and answer; "
            f"{limits.DEFAULT_PAYMENT_BUDGET_MS // 1_000} s when no") in API_TEXT
    assert f"a deadline under {limits.MIN_CALL_DEADLINE_MS} ms is refused" in API_TEXT
    assert f"at most {limits.MAX_CHANNELS_PER_LEG} are tried" in API_TEXT
    assert (f"one transaction per {limits.BATCH_FLUSH_ITEMS} items\n"
            f"or {limits.BATCH_FLUSH_IDLE_MS} ms of quiet") in API_TEXT


def test_a_payment_handed_over_has_outlived_any_call_that_drives_it() -> None:
    # Another replica's payment counts as executing for HANDOFF_AFTER_MS: the
    # longest budget, plus the settlement and reversal calls after it
    # (every try of each), must fit in it, or two replicas could drive one.
    assert limits.MAX_PAYMENT_BUDGET_MS == 60_000 >= limits.DEFAULT_PAYMENT_BUDGET_MS == 10_000
    settling_ms = limits.SETTLEMENT_TRIES * limits.SETTLEMENT_CALL_TIMEOUT_MS
    assert limits.HANDOFF_AFTER_MS == limits.MAX_PAYMENT_BUDGET_MS + 30_000 == 90_000
    assert limits.HANDOFF_AFTER_MS >= limits.MAX_PAYMENT_BUDGET_MS + 2 * settling_ms
    assert f"under {limits.HANDOFF_AFTER_MS // 1_000} s old counts as executing" in API_TEXT


def test_sums_over_legs_and_items_cannot_overflow_int64() -> None:
    int64_max = 2**63 - 1
    assert limits.MAX_AMOUNT_MINOR * limits.MAX_LEGS_PER_PAYMENT < int64_max
    assert limits.MAX_AMOUNT_MINOR * limits.BATCH_MAX_ITEMS_PER_MESSAGE < int64_max


def test_the_tuning_values_are_changed_on_purpose_only() -> None:
    # Not in the API contract, but each sets behaviour a figure in the docs
    # or in a benchmark rests on (retries, settlement budget, batch pipeline
    # sizes, identifier lengths): a change must be made here too, on purpose,
    # with those figures measured again.
    assert (limits.CHARGE_TRIES_PER_CHANNEL, limits.SETTLEMENT_TRIES,
            limits.SETTLEMENT_CALL_TIMEOUT_MS) == (2, 3, 2_000)
    assert (limits.CHANNEL_NAME_MAX_CHARS, limits.PAYMENT_ID_MAX_CHARS,
            limits.PAGE_TOKEN_MAX_CHARS) == (64, 64, 512)
    assert (limits.BATCH_INBOX_MESSAGES, limits.BATCH_PAGE_ITEMS) == (4, 1_000)
