"""paygrid batch CLI, kept for existing scripts: the same as
`paygrid batch submit` (paygrid_client.cli_batch_submit), with the results
file given as --output.

  .venv/bin/python clients/python/paygrid_batch.py submit payroll.csv \\
      --payer acct_000012345678 --output results.jsonl
"""

from __future__ import annotations

import sys
from typing import Sequence

from paygrid_client.cli import main as paygrid_main


def renamed(argument: str) -> str:
    """--output was the results file here; in `paygrid` it names the format."""
    if argument == "--output":
        return "--results-file"
    if argument.startswith("--output="):
        return "--results-file=" + argument.removeprefix("--output=")
    return argument


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    return paygrid_main(["batch", *map(renamed, arguments)])


if __name__ == "__main__":
    sys.exit(main())
