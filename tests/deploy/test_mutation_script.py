"""scripts/mutation on one tiny module (domain/model/fingerprint.py, 4 mutants):
a known mutant is planted, killed and reported; one the chosen tests cannot
see survives and is reported, failing --min-rate; a mutant listed as
equivalent is counted apart; the checkout is left as it was."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = "domain/model/fingerprint.py"
SORT_KEYS_OFF = "12:86-90:constant:True -> False"  # json.dumps(..., sort_keys=False)
ASCII_ESCAPES = "12:69-74:constant:False -> True"  # json.dumps(..., ensure_ascii=True)


def run_mutation(tmp_path: Path, equivalent: str, *args: str) -> subprocess.CompletedProcess:
    listed = tmp_path / "equivalent.txt"
    listed.write_text(equivalent)
    # Only the key-order test: it sees sort_keys, not how non-ASCII is written.
    return subprocess.run(
        [sys.executable, "scripts/mutation.py", "--module", MODULE, "--tests",
         "tests/domain/test_domain_model.py", "-k", "order_of_a_map", "--equivalent", str(listed),
         "--min-rate", "100", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_known_mutant_is_killed_and_a_survivor_reported(tmp_path) -> None:
    source = ROOT / "server" / "paygrid_server" / MODULE
    original = source.read_text()
    done = run_mutation(tmp_path, "", "--markdown")
    assert f"killed   {MODULE} {SORT_KEYS_OFF}" in done.stdout, done.stdout + done.stderr
    assert f"SURVIVED {MODULE} {ASCII_ESCAPES}" in done.stdout
    assert f"{MODULE}: 4 mutants, 0 equivalent, 3 killed, 1 survived" in done.stdout
    assert f"| {MODULE} | 4 | 0 | 3 | 75% |" in done.stdout
    assert done.returncode == 1  # under --min-rate 100
    assert source.read_text() == original


def test_a_mutant_listed_as_equivalent_is_counted_apart(tmp_path) -> None:
    reviewed = f"{MODULE} | {ASCII_ESCAPES} | reviewed for this test\n"
    listing = run_mutation(tmp_path, reviewed, "--list")
    assert f"{MODULE} {ASCII_ESCAPES} (equivalent)" in listing.stdout
    done = run_mutation(tmp_path, reviewed)
    assert f"{MODULE}: 4 mutants, 1 equivalent, 3 killed, 0 survived" in done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
