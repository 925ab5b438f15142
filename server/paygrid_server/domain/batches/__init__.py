"""Batch payments: intake of a batch stream, grouping, charging groups by workers,
resume after a crash, failure policies and progress events."""

from __future__ import annotations

from paygrid_server.domain.batches.events import (
    ItemsRejected,
    ItemsAlreadyProcessed,
    GroupCompleted,
    BatchSummary,
    Outbox,
)
from paygrid_server.domain.batches.failure_policy import (
    first_failure,
    stop,
    GroupReversal,
    BatchStop,
)
from paygrid_server.domain.batches.group_charging import (
    GroupCharger,
)
from paygrid_server.domain.batches.grouping import (
    group_key,
    Grouper,
)
from paygrid_server.domain.batches.intake import (
    Intake,
)
from paygrid_server.domain.batches.progress import (
    GroupProgress,
)
from paygrid_server.domain.batches.recharge import (
    charge_order,
    settle_interrupted,
    settle_interrupted_group,
)
from paygrid_server.domain.batches.resume import (
    Resume,
)
from paygrid_server.domain.batches.run import (
    BatchRun,
)
from paygrid_server.domain.batches.run_state import (
    RunState,
)
from paygrid_server.domain.batches.service import (
    BatchReport,
    BatchService,
)
from paygrid_server.domain.batches.timing import (
    BatchTiming,
    batch_timing,
)
from paygrid_server.domain.batches.workers import (
    BatchLeaseLimits,
    GroupListener,
    LeaseLost,
    GroupWorkers,
)

__all__ = [
    "BatchLeaseLimits",
    "BatchReport",
    "BatchRun",
    "BatchService",
    "BatchStop",
    "BatchSummary",
    "BatchTiming",
    "GroupCharger",
    "GroupCompleted",
    "GroupListener",
    "GroupProgress",
    "GroupReversal",
    "GroupWorkers",
    "Grouper",
    "Intake",
    "ItemsAlreadyProcessed",
    "ItemsRejected",
    "LeaseLost",
    "Outbox",
    "Resume",
    "RunState",
    "batch_timing",
    "charge_order",
    "first_failure",
    "group_key",
    "settle_interrupted",
    "settle_interrupted_group",
    "stop",
]
