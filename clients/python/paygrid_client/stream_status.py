"""The status a server ended a request-streaming call with, kept where
grpc.aio's client would replace it with its own INTERNAL.

grpc.aio (grpcio 1.85; grpc/grpc#36066, still open) writes the request
stream while the server may already have ended the call: it refused the
stream early (ABORTED REQUEST_IN_PROGRESS for a batch still open elsewhere,
INVALID_ARGUMENT for a bad header) or went away (UNAVAILABLE). The write in
flight then fails, and grpc.aio sets the call's status again, to INTERNAL
"Internal error from Core" (debug string 'Failed "execute_batch"'), over
the status it had already received. The caller sees INTERNAL: not retried,
without the server's reason or retry delay. Writing with call.write()
instead of a request iterator goes through the same write and loses the
status the same way.

grpc.aio runs a call's done callbacks as the first status is set, which is
the one received from the server whenever the write fails after it; so a
done callback reads it then and keeps it.
"""

from __future__ import annotations

from typing import Any, Coroutine

import grpc

# grpc.aio's own words for a status it made up, never a paygrid server's.
LOST_STATUS_DETAILS = "Internal error from Core"


def is_lost_status(error: grpc.RpcError) -> bool:
    """True for grpc.aio's INTERNAL after a failed write: the server's status was lost."""
    return (callable(getattr(error, "code", None)) and error.code() == grpc.StatusCode.INTERNAL
            and callable(getattr(error, "details", None))
            and error.details() == LOST_STATUS_DETAILS)


class ServerStatus:
    """Keeps the first status of `call` (a grpc.aio call), as it is set.

    `server_error(caught)` is what to report for an error the call raised:
    the server's own status when grpc.aio replaced it, else `caught`. (A
    call the server ended OK has no write in flight to fail: it ends only
    after reading the last message; a half-close that fails after the
    status does not replace it.)"""

    def __init__(self, call: Any) -> None:
        self._first: grpc.aio.AioRpcError | None = None
        self._kept = False
        call.add_done_callback(self._keep)

    def server_error(self, caught: grpc.RpcError) -> grpc.RpcError:
        if not is_lost_status(caught):
            return caught
        return self._first or caught

    def _keep(self, call: Any) -> None:
        if self._kept:  # grpc.aio may run the callbacks again for its own status
            return
        self._kept = True
        try:
            self._read(call)
        except Exception:  # noqa: BLE001 - grpc.aio runs this while it sets the status:
            pass  # nothing may break that; without a kept status the caught one stands

    def _read(self, call: Any) -> None:
        code = _now(call.code())
        if code is None or code == grpc.StatusCode.OK:
            return
        error = grpc.aio.AioRpcError(code, _now(call.initial_metadata()),
                                     _now(call.trailing_metadata()), _now(call.details()),
                                     _now(call.debug_error_string()))
        if not is_lost_status(error):
            self._first = error


def _now(step: Coroutine) -> Any:
    """The result of a grpc.aio call's accessor once the call is done: it
    returns without waiting, but only as a coroutine, and a done callback
    cannot await (by the time a task would read it, the status may already
    be replaced). None if it would wait after all."""
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    step.close()
    return None
