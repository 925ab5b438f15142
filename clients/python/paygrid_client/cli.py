"""paygrid: command-line client for paygrid.v1 (payments and batches).

  paygrid pay --payer acct_000012345678 --leg hotel_4711:EUR:45000 \\
      --leg flight_0815:EUR:31999:card
  paygrid pay --async --payer ... --leg ...   (answers once accepted: PROCESSING)
  paygrid get pay_...
  paygrid list --page-size 20 [--all]
  paygrid refund pay_... [--leg 0:EUR:5000]
  paygrid batch submit payroll.csv --payer acct_000012345678
  paygrid batch status file-...
  paygrid batch results file-... --status failed
  paygrid events watch [--from CURSOR | --earliest | --latest] [--consumer NAME]
      [--type PREFIX] [--subject ID] [--json]   (also: events list, ack, delete-consumer)

Global options go before or after the subcommand: --target (default
$PAYGRID_TARGET or 127.0.0.1:50051), --api-key (default $PAYGRID_API_KEY or
the development key), --tls-ca/--tls-cert/--tls-key/--tls-server-name,
--timeout-s (each call's deadline), --max-attempts (per call, retries
included), --output human|json.

Exit codes: 0 done (for pay --async: accepted); 1 the payment or refund did
not succeed (declined, failed, partly succeeded, still processing); 2 bad usage, or a request the
server refused (INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND,
UNAUTHENTICATED, ...); 3 the server could not be reached or did not finish
in time (run the same command again: with the same idempotency key or batch
file nothing is paid twice).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import payment_service_pb2 as pb
from paygrid_client.cli_arguments import (
    choice_of,
    metadata_entry,
    pay_leg,
    positive_float,
    positive_int,
    refund_leg,
)
from paygrid_client.cli_commands import (
    run_batch_import_pain001,
    run_batch_results,
    run_batch_status,
    run_batch_submit,
    run_get,
    run_list,
    run_pay,
    run_refund,
)
from paygrid_client.cli_events import add_event_commands
from paygrid_client.cli_exit_codes import EXIT_OK, EXIT_USAGE, exit_code_for
from paygrid_client.cli_output import FORMATS, HUMAN, Printer
from paygrid_client.connection import DEFAULT_TARGET, TARGET_ENV
from paygrid_client.errors import PaygridError
from paygrid_client.retries import RetryPolicy
from paygrid_client.sync_client import PaygridClient

MODES = {"all-or-nothing": pb.PAYMENT_MODE_ALL_OR_NOTHING,
         "independent": pb.PAYMENT_MODE_INDEPENDENT}
GROUPINGS = {"channel-and-currency": batch_pb.GROUPING_POLICY_CHANNEL_AND_CURRENCY,
             "channel": batch_pb.GROUPING_POLICY_CHANNEL,
             "channel-currency-and-payee": batch_pb.GROUPING_POLICY_CHANNEL_CURRENCY_AND_PAYEE}
FAILURE_POLICIES = {
    "continue": batch_pb.FAILURE_POLICY_CONTINUE,
    "stop-on-first-failure": batch_pb.FAILURE_POLICY_STOP_ON_FIRST_FAILURE,
    "all-or-nothing-per-group": batch_pb.FAILURE_POLICY_ALL_OR_NOTHING_PER_GROUP,
}
ITEM_STATUSES = {name.removeprefix("BATCH_ITEM_STATUS_").lower(): value
                 for name, value in batch_pb.BatchItemStatus.items() if value}


# -- parser -----------------------------------------------------------------

def add_global_options(parser: argparse.ArgumentParser, *, with_defaults: bool) -> None:
    """On the main parser with defaults; on each subcommand without them, so
    an option given after the subcommand overrides and one not given there
    keeps the value given before it."""
    def default(value):
        return value if with_defaults else argparse.SUPPRESS

    group = parser.add_argument_group("connection and output")
    group.add_argument("--target", default=default(os.environ.get(TARGET_ENV) or DEFAULT_TARGET),
                       help=f"host:port (default ${TARGET_ENV} or {DEFAULT_TARGET})")
    group.add_argument("--api-key", default=default(None),
                       help="default $PAYGRID_API_KEY, else the development key")
    group.add_argument("--tls-ca", type=Path, default=default(None),
                       help="PEM file of the CA to trust (turns TLS on)")
    group.add_argument("--tls-cert", type=Path, default=default(None),
                       help="client certificate PEM, for mutual TLS")
    group.add_argument("--tls-key", type=Path, default=default(None),
                       help="client private key PEM, for mutual TLS")
    group.add_argument("--tls-server-name", default=default(None),
                       help="name to expect in the server's certificate")
    group.add_argument("--timeout-s", type=positive_float, default=default(None),
                       help="deadline of each call, in seconds (default: per call)")
    group.add_argument("--max-attempts", type=positive_int, default=default(None),
                       help="attempts per call, retries included (default: "
                            f"{RetryPolicy().max_attempts})")
    group.add_argument("--output", choices=FORMATS, default=default(HUMAN),
                       help="human (default) or json (protobuf JSON, one object per line)")


def add_failure_policy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--failure-policy", type=choice_of(FAILURE_POLICIES, "failure policy"),
                        default=batch_pb.FAILURE_POLICY_UNSPECIFIED,
                        help="what a failed item does to the rest: " + ", ".join(FAILURE_POLICIES)
                        + " (default continue)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paygrid", description="paygrid payments and batches",
        epilog="exit codes: 0 done; 1 payment/refund not succeeded; 2 bad usage or request "
               "refused; 3 server unreachable or too slow (re-run: nothing is paid twice)")
    add_global_options(parser, with_defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent, name: str, help_text: str) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help_text, description=help_text)
        add_global_options(sub, with_defaults=False)
        return sub

    pay = command(commands, "pay", "execute a payment of one or more legs")
    pay.add_argument("--payer", required=True)
    pay.add_argument("--leg", dest="legs", type=pay_leg, action="append", required=True,
                     metavar="PAYEE:CURRENCY:AMOUNT_MINOR[:CHANNEL]",
                     help="a leg; repeat for more (1 to 16)")
    pay.add_argument("--mode", type=choice_of(MODES, "mode"),
                     default=pb.PAYMENT_MODE_UNSPECIFIED,
                     help="all-or-nothing (default) or independent")
    pay.add_argument("--idempotency-key", help="default: a new key; reuse one to retry safely")
    pay.add_argument("--metadata", type=metadata_entry, action="append", default=[],
                     metavar="KEY=VALUE")
    pay.add_argument("--async", dest="accepted_only", action="store_true",
                     help="answer as soon as the server has stored the payment (PROCESSING); "
                          "the legs run on in the server: see the outcome with `paygrid get`")
    pay.set_defaults(run=run_pay)

    get = command(commands, "get", "show one payment")
    get.add_argument("payment_id")
    get.set_defaults(run=run_get)

    listing = command(commands, "list", "list payments, newest first")
    listing.add_argument("--page-size", type=int, default=0, help="0: the server's default (50)")
    listing.add_argument("--page-token", default="", help="continue from this page")
    listing.add_argument("--all", action="store_true", help="every page")
    listing.set_defaults(run=run_list)

    refund = command(commands, "refund", "refund a payment, fully or per leg")
    refund.add_argument("payment_id")
    refund.add_argument("--leg", dest="legs", type=refund_leg, action="append", default=[],
                        metavar="INDEX[:CURRENCY:AMOUNT_MINOR]",
                        help="a leg to refund; none: everything still refundable")
    refund.add_argument("--reason", default="")
    refund.add_argument("--idempotency-key", help="default: a new key; reuse one to retry safely")
    refund.set_defaults(run=run_refund)

    batch = command(commands, "batch", "batch payments").add_subparsers(
        dest="batch_command", required=True, metavar="BATCH_COMMAND")
    submit = command(batch, "submit", "submit (or resume) a CSV / JSON Lines file")
    submit.add_argument("file", type=Path)
    submit.add_argument("--payer", required=True)
    submit.add_argument("--results-file", type=Path,
                        help="one JSON line per item (default: FILE.results.jsonl)")
    submit.add_argument("--batch-id", help="default: derived from the file's content")
    submit.add_argument("--grouping", type=choice_of(GROUPINGS, "grouping"),
                        default=batch_pb.GROUPING_POLICY_UNSPECIFIED,
                        help=", ".join(GROUPINGS))
    submit.add_argument("--group-size", type=int, default=0, help="0: the server's default (100)")
    submit.add_argument("--parallelism", type=int, default=0, help="0: the server's default (4)")
    add_failure_policy(submit)
    submit.set_defaults(run=run_batch_submit)

    pain001 = command(batch, "import-pain001",
                      "pay an ISO 20022 pain.001 file and write a pain.002 status report")
    pain001.add_argument("file", type=Path)
    pain001.add_argument("--status-report", type=Path,
                         help="the pain.002 file (default: FILE without .xml + .pain002.xml)")
    pain001.add_argument("--group-size", type=int, default=0,
                         help="0: the server's default (100)")
    pain001.add_argument("--parallelism", type=int, default=0,
                         help="0: the server's default (4)")
    add_failure_policy(pain001)
    pain001.set_defaults(run=run_batch_import_pain001)

    status = command(batch, "status", "show a batch's status, counts and timing")
    status.add_argument("batch_id")
    status.set_defaults(run=run_batch_status)

    results = command(batch, "results", "list a batch's items with their results")
    results.add_argument("batch_id")
    results.add_argument("--status", type=choice_of(ITEM_STATUSES, "status"),
                         default=batch_pb.BATCH_ITEM_STATUS_UNSPECIFIED,
                         help="only items with this status: " + ", ".join(ITEM_STATUSES))
    results.set_defaults(run=run_batch_results)
    add_event_commands(commands, command)
    return parser


def print_error(error: PaygridError) -> None:
    print(f"error: {error}", file=sys.stderr)
    if error.idempotency_key and exit_code_for(error) != EXIT_USAGE:
        print(f"its outcome may be unknown: run again with --idempotency-key "
              f"{error.idempotency_key} to finish it or get its outcome; it never runs twice",
              file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        client = PaygridClient(args.target, api_key=args.api_key, tls_ca=args.tls_ca,
                               tls_cert=args.tls_cert, tls_key=args.tls_key,
                               tls_server_name=args.tls_server_name,
                               retry_policy=(RetryPolicy(max_attempts=args.max_attempts)
                                             if args.max_attempts else RetryPolicy()))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with client:
            return args.run(client, args, Printer(args.output))
    except PaygridError as error:
        print_error(error)
        return exit_code_for(error)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, and keep
        # Python from failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
