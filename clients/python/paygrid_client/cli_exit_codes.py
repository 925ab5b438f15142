"""The CLI's exit codes, and which error status maps to which."""

from __future__ import annotations

import grpc

from paygrid_client.errors import PaygridError

EXIT_OK = 0
# The call worked but the payment or refund did not (fully) succeed.
EXIT_NOT_SUCCEEDED = 1
# Bad usage, or a request the server refused: sending it again will not help.
EXIT_USAGE = 2
# The server was unreachable, busy or too slow: running again may help, and
# nothing is paid twice (same idempotency key, same batch file).
EXIT_TRY_AGAIN = 3

REFUSED_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
})


def exit_code_for(error: PaygridError) -> int:
    return EXIT_USAGE if error.code in REFUSED_CODES else EXIT_TRY_AGAIN
