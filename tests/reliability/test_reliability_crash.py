"""The server SIGKILLed at seeded points during a batch and during a stream of
Pay calls, restarted, and every call resubmitted: the channels' ledgers equal
what paygrid recorded, 0 lost, 0 duplicated. A small subset of the long runs
of scripts/reliability_crash (same scenarios, fewer items and calls)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.crash_batch_scenario import BatchCrashConfig, run_batch_crash
from tests.support.crash_pay_scenario import PayCrashConfig, run_pay_crash

# Seed 5 kills twice after some groups; seed 7 before the items are sent,
# then after some groups (kill points are drawn from the seed).
SEEDS = (5, 7)


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_batch_killed_and_resubmitted_pays_every_item_exactly_once(
        seed: int, tmp_path: Path) -> None:
    run = await run_batch_crash(seed, tmp_path, BatchCrashConfig(items=3_000, max_kills=2))
    assert run.kills and run.submissions == len(run.kills) + 1, run.describe()
    # A kill caught the batch mid-way: items stored but not final.
    assert any(sum(kill.left_by_status.values()) > sum(
        n for status, n in kill.left_by_status.items() if status in ("SUCCEEDED", "FAILED"))
        for kill in run.kills), run.describe()
    assert run.ok, run.describe()
    assert run.exactly_once.checked == 3_000
    assert run.exactly_once.captures == 3_000 - 31  # one payee in 97 declines


@pytest.mark.parametrize("seed", SEEDS)
async def test_pay_calls_retried_across_kills_charge_each_leg_at_most_once(
        seed: int, tmp_path: Path) -> None:
    run = await run_pay_crash(seed, tmp_path, PayCrashConfig(payments=300, max_kills=2))
    assert run.kills, run.describe()
    # Payments were mid-flight at a kill: the restarted server had to resolve them.
    assert sum(kill.left_by_status.get("PROCESSING", 0) for kill in run.kills) > 0, \
        run.describe()
    assert run.ok, run.describe()
    assert run.exactly_once.checked == run.legs
    assert sum(run.outcomes.values()) == 300


async def test_a_batch_on_two_sqlite_workers_killed_and_resubmitted_pays_every_item_once(
        tmp_path: Path) -> None:
    """`serve --workers 2` sharing one SQLite file: each kill SIGKILLs the
    worker running the batch's stream (its supervisor starts it again), the
    other worker's groups go on; the resubmission finishes the batch."""
    run = await run_batch_crash(5, tmp_path, BatchCrashConfig(
        items=3_000, max_kills=2, workers=2, engine="sqlite"))
    assert run.kills and run.submissions == len(run.kills) + 1, run.describe()
    assert run.ok, run.describe()
    assert run.exactly_once.checked == 3_000
    assert run.exactly_once.captures == 3_000 - 31  # one payee in 97 declines
