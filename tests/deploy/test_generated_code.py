"""Generated stubs match the protos; the protos pass buf lint."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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


# The API as published: a buf image checked in, updated on purpose when the
# API changes (docs/api/protocol-buffers.md). Against a
# file, not git history: a shallow CI clone or a first commit has no HEAD~1.
API_IMAGE = ROOT / "protos" / "buf.image.binpb"


def _buf_breaking(workspace: Path) -> subprocess.CompletedProcess:
    buf = Path(sys.executable).parent / "buf"
    return subprocess.run([str(buf), "breaking", "--against", str(API_IMAGE)], cwd=workspace,
                          capture_output=True, text=True)


def test_no_proto_change_breaks_the_published_api() -> None:
    result = _buf_breaking(ROOT)
    assert result.returncode == 0, (
        "a change breaks existing clients:\n" + result.stdout + result.stderr)


def test_a_breaking_change_is_caught(tmp_path: Path) -> None:
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    batch_proto = tmp_path / "protos" / "paygrid" / "v1" / "batch_service.proto"
    text = batch_proto.read_text()
    assert "uint32 group_no = 1;" in text
    batch_proto.write_text(text.replace("uint32 group_no = 1;", "uint32 group_no = 9;", 1))
    result = _buf_breaking(tmp_path)
    assert result.returncode != 0
    assert 'field "1" with name "group_no"' in result.stdout


@pytest.mark.skipif(shutil.which("protoc") is None,
                    reason="needs `protoc` on PATH for buf's built-in Java generator")
def test_buf_gen_managed_mode_gives_java_its_packages(tmp_path: Path) -> None:
    """buf.gen.yaml's managed mode and inputs, its hosted plugins swapped
    for protoc's built-in Java generator (no network needed)."""
    config = (ROOT / "buf.gen.yaml").read_text()
    local = config[:config.index("plugins:\n")] + (
        f"plugins:\n  - protoc_builtin: java\n    out: {tmp_path}\n")
    buf = Path(sys.executable).parent / "buf"
    template = tmp_path / "buf.gen.local.yaml"
    template.write_text(local)
    result = subprocess.run([str(buf), "generate", "--template", str(template)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    generated = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.java")}
    assert {"com/paygrid/v1/PayRequest.java", "com/paygrid/v1/BatchEnd.java",
            "com/paygrid/v1/PaymentServiceProto.java"} <= generated  # a class per message
    assert not [name for name in generated if "OuterClass" in name]
    # google/rpc is left to com.google.rpc (proto-google-common-protos).
    assert not [name for name in generated if name.startswith("com/google/")]
