"""paygrid as it was at an older commit, for "before and after" rows of one
bench run: the commit's files (git archive, nothing checked out in the
repository) in a temporary folder with its own generated stubs, and the
environment that makes `python -m paygrid_server` import that code instead
of this tree's (PYTHONPATH comes before the virtualenv's editable install).
The virtualenv (dependencies) is this tree's: the baseline must not differ
in its dependencies."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def baseline_tree(commit: str) -> Iterator[dict[str, str]]:
    """Yields the extra environment for a server running `commit`'s code."""
    with tempfile.TemporaryDirectory(prefix="paygrid-baseline-") as folder:
        tree = Path(folder)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        subprocess.run([sys.executable, str(tree / "scripts" / "generate_protos.py")],
                       check=True, capture_output=True, cwd=tree)
        path = os.pathsep.join([str(tree / "server"), str(tree / "gen" / "python")])
        yield {"PYTHONPATH": path}


def imported_from(extra_env: dict[str, str]) -> Path:
    """Where `paygrid_server` comes from under extra_env (the bench checks it)."""
    found = subprocess.run(
        [sys.executable, "-c", "import paygrid_server; print(paygrid_server.__file__)"],
        check=True, capture_output=True, text=True, env={**os.environ, **extra_env})
    return Path(found.stdout.strip())
