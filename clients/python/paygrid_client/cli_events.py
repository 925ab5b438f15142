"""`paygrid events ...`: watch, list, ack and forget named consumers.

  paygrid events watch [--from CURSOR | --earliest | --latest] [--consumer NAME]
      [--type PREFIX] [--subject ID] [--json] [--ack-every N] [--max-events N]
  paygrid events list [--from CURSOR] [--type PREFIX] [--subject ID] [--page-size N]
  paygrid events ack NAME CURSOR
  paygrid events delete-consumer NAME

watch prints one line per event as it commits, until interrupted (or
--max-events). With --consumer it starts after that consumer's saved
position (an unknown one: --latest if given, else the earliest event kept)
and acks after printing, every --ack-every events (default 1: at most the
last event is printed again after a crash) and on every keep-alive frame.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from paygrid.v1 import event_service_pb2 as ev
from paygrid_client.cli_arguments import positive_int
from paygrid_client.cli_exit_codes import EXIT_OK
from paygrid_client.cli_output import JSON, Printer
from paygrid_client.sync_client import PaygridClient

Command = Callable[..., argparse.ArgumentParser]


def add_event_commands(commands, command: Command) -> None:
    events = command(commands, "events", "the event log: watch, list, ack").add_subparsers(
        dest="events_command", required=True, metavar="EVENTS_COMMAND")

    watch = command(events, "watch", "print events as they commit, one line each")
    start = watch.add_mutually_exclusive_group()
    start.add_argument("--from", dest="after_cursor", type=int, default=0, metavar="CURSOR",
                       help="after this cursor (default 0: the beginning)")
    start.add_argument("--earliest", action="store_const", dest="start",
                       const=ev.START_POSITION_EARLIEST, help="from the oldest event kept")
    start.add_argument("--latest", action="store_const", dest="start",
                       const=ev.START_POSITION_LATEST,
                       help="only events committed from now on")
    watch.add_argument("--consumer", default="", metavar="NAME",
                       help="resume after this consumer's saved position and ack as it goes")
    watch.add_argument("--ack-every", type=positive_int, default=1, metavar="N",
                       help="with --consumer: ack after every N events printed (default 1)")
    watch.add_argument("--max-events", type=positive_int, default=None, metavar="N",
                       help="stop after N events")
    _add_filters(watch)
    watch.set_defaults(run=run_events_watch, start=ev.START_POSITION_UNSPECIFIED)

    listing = command(events, "list", "print one page of events after a cursor")
    listing.add_argument("--from", dest="after_cursor", type=int, default=0, metavar="CURSOR")
    listing.add_argument("--page-size", type=int, default=0, help="0: the server's default (100)")
    _add_filters(listing)
    listing.set_defaults(run=run_events_list)

    ack = command(events, "ack", "save a consumer's position (cumulative)")
    ack.add_argument("consumer")
    ack.add_argument("cursor", type=int)
    ack.set_defaults(run=run_events_ack)

    forget = command(events, "delete-consumer",
                     "forget a consumer's position (it no longer holds retention back)")
    forget.add_argument("consumer")
    forget.set_defaults(run=run_events_delete_consumer)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--type", dest="type_prefix", default="", metavar="PREFIX",
                        help="only types starting with this, e.g. io.paygrid.payment.")
    parser.add_argument("--subject", default="", metavar="ID",
                        help="only this payment_id or batch_id")
    parser.add_argument("--json", dest="output", action="store_const", const=JSON,
                        default=argparse.SUPPRESS,
                        help="the same as --output json")


def run_events_watch(client: PaygridClient, args: argparse.Namespace, printer: Printer) -> int:
    printed = acked = 0
    cursor = None
    frames = client.watch_events(after_cursor=args.after_cursor, start=args.start,
                                 consumer=args.consumer, type_prefix=args.type_prefix,
                                 subject=args.subject, keepalives=True)
    for frame in frames:
        if frame.HasField("event"):
            printer.event(frame.event)
            printed += 1
        cursor = frame.cursor
        sys.stdout.flush()  # printed before acked: an ack never covers an unprinted event
        done = args.max_events is not None and printed >= args.max_events
        if args.consumer and cursor > acked and (
                not frame.HasField("event") or printed % args.ack_every == 0 or done):
            acked = client.ack_events(args.consumer, cursor, timeout_s=args.timeout_s)
        if done:
            frames.close()
            break
    return EXIT_OK


def run_events_list(client: PaygridClient, args: argparse.Namespace, printer: Printer) -> int:
    page = client.list_events_page(args.after_cursor, args.page_size,
                                   type_prefix=args.type_prefix, subject=args.subject,
                                   timeout_s=args.timeout_s)
    for event in page.events:
        printer.event(event)
    print(f"next: --from {page.next_cursor}", file=sys.stderr)
    return EXIT_OK


def run_events_ack(client: PaygridClient, args: argparse.Namespace, printer: Printer) -> int:
    saved = client.ack_events(args.consumer, args.cursor, timeout_s=args.timeout_s)
    print(f"{args.consumer}: {saved}")
    return EXIT_OK


def run_events_delete_consumer(client: PaygridClient, args: argparse.Namespace,
                               printer: Printer) -> int:
    client.delete_event_consumer(args.consumer, timeout_s=args.timeout_s)
    return EXIT_OK
