"""How a serving process ends, whatever hangs on the way.

The first SIGTERM or SIGINT starts the graceful stop (app.py: drain delay,
then up to shutdown_grace_ms for calls and their work). A second one exits
at once, and a hard deadline (drain + grace + HARD_DEADLINE_MARGIN_S) exits
even if the stop itself hangs: a process that closed its ports but never
exits serves nothing while a supervisor sees it alive (issue 14, item 8).
Work cut off either way is left as a crash leaves it, and resumed the same
way (recovery for payments, resubmission for batches).

Exit codes: 0 stopped cleanly, 1 stop cut short (second signal or hard
deadline), 2 start-up failure (startup_failure.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from typing import Callable

EXIT_CUT_SHORT = 1
# Past drain + grace: closing channels, simulators, the database and
# telemetry takes well under a second; this is for when something hangs.
HARD_DEADLINE_MARGIN_S = 5.0
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_now(reason: str) -> None:
    """Ends the process without cleanup (threads, atexit): used only once
    the graceful way has been given up."""
    try:
        sys.stderr.write(f"paygrid-server: {reason}; exiting now (work cut off is resumed "
                         "as after a crash)\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_CUT_SHORT)


def on_stop_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
    """The first SIGTERM or SIGINT calls `stop`; any later one exits at once."""
    def first(sig: signal.Signals) -> None:
        for each in SIGNALS:
            # A plain handler, not the loop's: it must work even when the
            # loop no longer runs (asyncio's final cancellation, thread joins).
            loop.remove_signal_handler(each)
            signal.signal(each, lambda number, frame: exit_now(
                f"{signal.Signals(number).name} during shutdown"))
        stop()

    for sig in SIGNALS:
        loop.add_signal_handler(sig, first, sig)


def start_hard_deadline(seconds: float) -> None:
    """Exits the process after `seconds`, from a daemon thread, so it fires
    even if the event loop is stuck."""
    timer = threading.Timer(seconds, exit_now,
                            (f"shutdown still running after {seconds:g} s (hard deadline)",))
    timer.daemon = True
    timer.name = "paygrid-shutdown-deadline"
    timer.start()
