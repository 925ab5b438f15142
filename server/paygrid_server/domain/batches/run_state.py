"""Where one submission of a batch stands: one state, one enum.

    TAKING --------(client ends)----------> SEALING --> ENDED
    HOLDING --(ends, control totals match)-> SEALING --> ENDED
    HOLDING/TAKING --(totals do not match)-> REFUSED | REJECTED
    TAKING/HOLDING/SEALING --(stream gone or refused)--> BREAKING --> BROKEN
                                        (or ENDED, when the client had ended)

Groups are formed only while TAKING or SEALING; items taken while HOLDING
are stored, not grouped, until the control totals are checked. A run whose
intake is over (ENDED, BROKEN, REFUSED, REJECTED) waits only for the groups
it queued to be done, then finishes.
"""

from __future__ import annotations

import enum


class RunState(enum.Enum):
    TAKING = "taking"  # taking items in, grouping them as they come
    HOLDING = "holding"  # taking items in, stored but not grouped until the totals match
    SEALING = "sealing"  # the client sent everything: the last groups are queued
    BREAKING = "breaking"  # the stream is gone or refused: no item taken or grouped any more
    ENDED = "ended"  # the client sent everything and every group is queued
    BROKEN = "broken"  # intake over without an end: ungrouped items wait for a resubmission
    REFUSED = "refused"  # the control totals did not match; groups charged before stand
    REJECTED = "rejected"  # the control totals did not match and nothing was charged

    @property
    def groups_items(self) -> bool:
        return self in (RunState.TAKING, RunState.SEALING)

    @property
    def intake_over(self) -> bool:
        return self in (RunState.ENDED, RunState.BROKEN, RunState.REFUSED, RunState.REJECTED)
