"""Mutation testing of the domain: plant one small bug at a time and see
whether the module's targeted tests notice.

Each mutant is written into a copy of the server package (the checkout is
never touched), and the targeted tests run against that copy (PYTHONPATH puts
it first) with -x and a timeout: a failure or a timeout kills the mutant.
Mutants reviewed as equivalent (no test could tell them apart from the
original) are listed with a reason in scripts/mutation_equivalent.txt and
counted apart. Usage: scripts/mutation [--list] [--module NAME ...]
[--markdown] [--timeout S].
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_operators import Mutant, find_mutants, mutate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "server" / "paygrid_server"
EQUIVALENT_FILE = ROOT / "scripts" / "mutation_equivalent.txt"

# Module (relative to the package) -> the tests that pin its behaviour down:
# fast ones, so one mutant costs one pytest start and a few seconds at most.
MODULES: dict[str, list[str]] = {
    "domain/model/money.py": ["tests/domain/test_domain_model.py"],
    "domain/model/currencies.py": ["tests/domain/test_domain_model.py"],
    "domain/model/fingerprint.py": ["tests/domain/test_domain_model.py"],
    "domain/model/errors.py": ["tests/domain/test_domain_model.py"],
    "domain/model/limits.py": ["tests/domain/test_limits.py"],
    "domain/model/payment.py": ["tests/domain/test_domain_model.py"],
    "domain/model/refund.py": ["tests/domain/test_domain_model.py"],
    "domain/model/batch.py": ["tests/domain/test_domain_model.py"],
    "domain/model/request_validation.py": ["tests/domain/test_request_validation.py"],
    "domain/model/control_totals.py": ["tests/domain/test_request_validation.py"],
    "domain/charging/routing.py": ["tests/domain/test_routing.py"],
    "domain/charging/circuit_breaker.py": ["tests/domain/test_circuit_breaker.py"],
    "domain/charging/channel_charge.py": ["tests/domain/test_channel_charge.py"],
    "domain/charging/retries.py": ["tests/domain/test_channel_charge.py"],
    "domain/batches/grouping.py": ["tests/domain/test_batch_grouping.py"],
}


@dataclass
class ModuleResult:
    module: str
    killed: list[Mutant] = field(default_factory=list)
    survived: list[Mutant] = field(default_factory=list)
    equivalent: list[Mutant] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return len(self.killed) + len(self.survived) + len(self.equivalent)

    @property
    def rate(self) -> float:
        counted = len(self.killed) + len(self.survived)
        return 100.0 * len(self.killed) / counted if counted else 100.0


def load_equivalent(path: Path = EQUIVALENT_FILE) -> dict[str, set[str]]:
    """module -> mutant idents reviewed as equivalent. Each line reads
    `module | line:col:operator:description | why no test can kill it`."""
    reviewed: dict[str, set[str]] = {}
    if not path.exists():
        return reviewed
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        module, ident, reason = (part.strip() for part in line.split("|", 2))
        assert reason, f"an equivalent mutant needs its reason: {raw!r}"
        reviewed.setdefault(module, set()).add(ident)
    return reviewed


def run_tests(copy_root: Path, tests: list[str], timeout_s: float, select: str | None) -> bool:
    """True when the tests pass against the package in `copy_root`."""
    env = dict(os.environ, PYTHONPATH=str(copy_root), PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
               "-p", "no:randomly", "--no-header", "-o", "addopts=", *tests]
    if select:
        command += ["-k", select]
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, timeout=timeout_s,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False  # a mutant that hangs the tests is caught by them
    return done.returncode == 0


def mutate_module(module: str, tests: list[str], equivalent: set[str], timeout_s: float,
                  select: str | None = None, package: Path = PACKAGE,
                  progress=lambda text: None) -> ModuleResult:
    result = ModuleResult(module)
    started = time.monotonic()
    source = (package / module).read_text()
    with tempfile.TemporaryDirectory(prefix="paygrid-mutation-") as scratch:
        copy_root = Path(scratch)
        shutil.copytree(package, copy_root / package.name,
                        ignore=shutil.ignore_patterns("__pycache__"))
        target = copy_root / package.name / module
        if not run_tests(copy_root, tests, timeout_s, select):
            raise SystemExit(f"{module}: its tests fail before any mutation: {tests}")
        for mutant in find_mutants(source):
            if mutant.ident in equivalent:
                result.equivalent.append(mutant)
                continue
            target.write_text(mutate(source, mutant))
            killed = not run_tests(copy_root, tests, timeout_s, select)
            (result.killed if killed else result.survived).append(mutant)
            progress(f"  {'killed  ' if killed else 'SURVIVED'} {module} {mutant.ident}")
        target.write_text(source)
    result.seconds = time.monotonic() - started
    return result


def markdown_table(results: list[ModuleResult]) -> str:
    lines = ["| module | mutants | equivalent | killed | kill rate (non-equivalent) |",
             "|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.module} | {r.total} | {len(r.equivalent)} | {len(r.killed)} | "
                     f"{r.rate:.0f}% |")
    killed = sum(len(r.killed) for r in results)
    counted = sum(len(r.killed) + len(r.survived) for r in results)
    lines.append(f"| **all** | {sum(r.total for r in results)} | "
                 f"{sum(len(r.equivalent) for r in results)} | {killed} | "
                 f"{100.0 * killed / counted if counted else 100.0:.0f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", help="e.g. domain/charging/routing.py (repeatable)")
    parser.add_argument("--tests", nargs="+", help="tests for --module instead of the mapped ones")
    parser.add_argument("-k", dest="select", help="pytest -k expression for the tests")
    parser.add_argument("--package", type=Path, default=PACKAGE,
                        help="the package to mutate a copy of (default: the server's)")
    parser.add_argument("--equivalent", type=Path, default=EQUIVALENT_FILE)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per test run")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--min-rate", type=float, default=0.0,
                        help="exit 1 when the overall kill rate is below this (percent)")
    args = parser.parse_args(argv)

    modules = args.module or list(MODULES)
    equivalent = load_equivalent(args.equivalent)
    if args.list:
        for module in modules:
            for mutant in find_mutants((args.package / module).read_text()):
                mark = " (equivalent)" if mutant.ident in equivalent.get(module, set()) else ""
                print(f"{module} {mutant.ident}{mark}")
        return 0
    results = []
    for module in modules:
        tests = args.tests or MODULES[module]
        result = mutate_module(module, tests, equivalent.get(module, set()), args.timeout,
                               args.select, args.package, progress=print)
        results.append(result)
        print(f"{module}: {result.total} mutants, {len(result.equivalent)} equivalent, "
              f"{len(result.killed)} killed, {len(result.survived)} survived "
              f"({result.rate:.0f}% of non-equivalent killed, {result.seconds:.0f} s)", flush=True)
        for mutant in result.survived:
            print(f"    survivor: {module} | {mutant.ident}", flush=True)
    if args.markdown:
        print(markdown_table(results))
    killed = sum(len(r.killed) for r in results)
    counted = sum(len(r.killed) + len(r.survived) for r in results)
    rate = 100.0 * killed / counted if counted else 100.0
    print(f"overall: {killed}/{counted} non-equivalent mutants killed ({rate:.1f}%)")
    return 1 if rate < args.min_rate else 0


if __name__ == "__main__":
    sys.exit(main())
