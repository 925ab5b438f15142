"""`paygrid batch submit FILE`: submits (or resumes) a batch file, with a
progress bar on stderr and every item's result written to a JSON Lines file.

Resuming: the batch id defaults to a digest of the file, so running the same
command again after an interruption (Ctrl-C, lost connection, server
restart) resumes that batch: items already done come back as stored results
and are not paid again; the results file is written anew, complete.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid_client.batch_files import BatchFile, BatchFileError, result_line
from paygrid_client.batch_progress import Progress
from paygrid_client.cli_exit_codes import EXIT_OK, EXIT_TRY_AGAIN, EXIT_USAGE, exit_code_for
from paygrid_client.cli_output import Printer
from paygrid_client.errors import PaygridError
from paygrid_client.retries import RetryPolicy
from paygrid_client.sync_client import PaygridClient

# A resubmission right after an interruption finds the earlier stream still
# finishing its groups (ABORTED with a RetryInfo of about 1 s): wait for it,
# up to about four minutes.
RESUME_RETRY_POLICY = RetryPolicy(max_attempts=120, initial_backoff_s=1.0, max_backoff_s=2.0)


def default_results_path(source: Path) -> Path:
    return source.with_name(source.name + ".results.jsonl")


def submit_batch_file(client: PaygridClient, printer: Printer, source_path: Path, *, payer: str,
                      results_path: Path | None = None, batch_id: str | None = None,
                      grouping: batch_pb.GroupingPolicy.ValueType =
                      batch_pb.GROUPING_POLICY_UNSPECIFIED,
                      max_group_size: int = 0, parallelism: int = 0,
                      failure_policy: batch_pb.FailurePolicy.ValueType =
                      batch_pb.FAILURE_POLICY_UNSPECIFIED,
                      timeout_s: float | None = None) -> int:
    source = BatchFile(source_path)
    try:
        total_items = source.check()
    except (OSError, BatchFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    batch_id = batch_id or source.default_batch_id()
    results_path = results_path or default_results_path(source_path)
    announce(client, batch_id, timeout_s)

    progress = Progress(total_items)
    summary = None
    with results_path.open("w") as results:
        try:
            for response in client.submit_batch(
                    batch_id, payer, source, grouping=grouping, max_group_size=max_group_size,
                    parallelism=parallelism, failure_policy=failure_policy, timeout_s=timeout_s,
                    retry_policy=RESUME_RETRY_POLICY):
                kind = response.WhichOneof("kind")
                if kind == "summary":
                    summary = response.summary
                    continue
                items = response.group.items if kind == "group" else getattr(response, kind).items
                results.writelines(result_line(item) for item in items)
                progress.add(items)
        except PaygridError as error:
            progress.show(final=True)
            print(f"stopped: {error}", file=sys.stderr)
            if exit_code_for(error) == EXIT_TRY_AGAIN:
                print("run the same command again to resume; nothing is paid twice",
                      file=sys.stderr)
            return exit_code_for(error)
    progress.show(final=True)
    if summary is None:
        print("stopped: the stream ended without a summary; run the same command again "
              "to resume", file=sys.stderr)
        return EXIT_TRY_AGAIN
    printer.batch_summary(summary, results_path)
    return EXIT_OK if summary.status == batch_pb.BATCH_STATUS_COMPLETED else EXIT_TRY_AGAIN


def announce(client: PaygridClient, batch_id: str, timeout_s: float | None) -> None:
    try:
        prior = client.get_batch(batch_id, timeout_s=timeout_s)
    except PaygridError as error:
        if error.code != grpc.StatusCode.NOT_FOUND:
            raise
        print(f"submitting batch {batch_id}", file=sys.stderr)
        return
    print(f"resuming batch {batch_id} ({prior.counts.succeeded} succeeded so far)",
          file=sys.stderr)
