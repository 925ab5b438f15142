"""Generated stubs match the protos; the protos pass buf lint."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tree(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file()
            and "__pycache__" not in p.parts}


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "generate_protos.py"),
                    "--out", str(tmp_path)], check=True)
    fresh, current = _tree(tmp_path), _tree(ROOT / "gen" / "python")
    assert sorted(fresh) == sorted(current), "run scripts/generate_protos.py"
    stale = [name for name in fresh if not filecmp.cmp(fresh[name], current[name], shallow=False)]
    assert not stale, f"stale generated code: {stale}; run scripts/generate_protos.py"


def test_the_code_imports_the_generated_tree() -> None:
    from paygrid.v1 import payment_service_pb2

    assert Path(payment_service_pb2.__file__).is_relative_to(ROOT / "gen" / "python")


def test_protos_pass_buf_lint() -> None:
    buf = Path(sys.executable).parent / "buf"
    result = subprocess.run([str(buf), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
