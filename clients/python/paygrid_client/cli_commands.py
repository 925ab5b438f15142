"""The CLI's commands: each takes the client, the parsed arguments and the
printer, makes its calls and returns the exit code (cli_exit_codes.py)."""

from __future__ import annotations

import argparse
import sys

from paygrid.v1 import payment_service_pb2 as pb
from paygrid_client.cli_batch_submit import submit_batch_file
from paygrid_client.cli_exit_codes import EXIT_NOT_SUCCEEDED, EXIT_OK
from paygrid_client.cli_output import Printer
from paygrid_client.cli_pain001_import import import_pain001
from paygrid_client.sync_client import PaygridClient


def run_pay(client: PaygridClient, args: argparse.Namespace, printer: Printer) -> int:
    wait = pb.PAY_WAIT_ACCEPTED if args.accepted_only else pb.PAY_WAIT_UNSPECIFIED
    payment = client.pay(args.payer, args.legs, mode=args.mode, metadata=dict(args.metadata),
                         idempotency_key=args.idempotency_key, timeout_s=args.timeout_s,
                         wait=wait)
    printer.payment(payment)
    # --async asked only for acceptance; a payment already final (a retry of
    # a finished key) still exits by its outcome.
    accepted = args.accepted_only and payment.status == pb.PAYMENT_STATUS_PROCESSING
    succeeded = payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    return EXIT_OK if accepted or succeeded else EXIT_NOT_SUCCEEDED


def run_get(client: PaygridClient, args: argparse.Namespace, printer: Printer) -> int:
    printer.payment(client.get_payment(args.payment_id, timeout_s=args.timeout_s))
    return EXIT_OK


def run_list(client: PaygridClient, args: argparse.Namespace, printer: Printer) -> int:
    if args.all:
        pages = client.list_payment_pages(args.page_size, args.page_token,
                                          timeout_s=args.timeout_s)
        printer.payments(p for page in pages for p in page.payments)
        return EXIT_OK
    page = client.list_payments_page(args.page_size, args.page_token, timeout_s=args.timeout_s)
    printer.payments(page.payments)
    if page.next_page_token:
        print(f"more: --page-token {page.next_page_token}", file=sys.stderr)
    return EXIT_OK


def run_refund(client: PaygridClient, args: argparse.Namespace, printer: Printer) -> int:
    response = client.refund_payment(args.payment_id, args.legs, reason=args.reason,
                                     idempotency_key=args.idempotency_key,
                                     timeout_s=args.timeout_s)
    printer.refund(response)
    return (EXIT_OK if response.refund.status == pb.REFUND_STATUS_SUCCEEDED
            else EXIT_NOT_SUCCEEDED)


def run_batch_submit(client: PaygridClient, args: argparse.Namespace, printer: Printer) -> int:
    return submit_batch_file(client, printer, args.file, payer=args.payer,
                             results_path=args.results_file, batch_id=args.batch_id,
                             grouping=args.grouping, max_group_size=args.group_size,
                             parallelism=args.parallelism, failure_policy=args.failure_policy,
                             timeout_s=args.timeout_s)


def run_batch_import_pain001(client: PaygridClient, args: argparse.Namespace,
                             printer: Printer) -> int:
    return import_pain001(client, args.file, report_path=args.status_report,
                          max_group_size=args.group_size, parallelism=args.parallelism,
                          failure_policy=args.failure_policy, timeout_s=args.timeout_s)


def run_batch_status(client: PaygridClient, args: argparse.Namespace, printer: Printer) -> int:
    printer.batch(client.get_batch(args.batch_id, timeout_s=args.timeout_s))
    return EXIT_OK


def run_batch_results(client: PaygridClient, args: argparse.Namespace, printer: Printer) -> int:
    printer.batch_items(client.list_batch_items(args.batch_id, args.status,
                                                timeout_s=args.timeout_s))
    return EXIT_OK
