"""Regenerates the Python gRPC stubs from protos/ into gen/python/.

The one command for generated code: `python scripts/generate_protos.py`
(scripts/setup runs it). `--out DIR` writes elsewhere, which the staleness
test uses to compare a fresh generation with what the code imports.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc
import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUT = ROOT / "gen" / "python"


# protos/google holds copies of googleapis files, there only to be imported
# (by protoc, buf and the Node client). Their Python modules come from
# googleapis-common-protos (a dependency of grpcio-status), whose
# descriptors the server already loads: a second generated copy would
# clash with them.
IMPORTED_ONLY = PROTO_ROOT / "google"


def proto_files() -> list[Path]:
    return sorted(p for p in PROTO_ROOT.rglob("*.proto") if not p.is_relative_to(IMPORTED_ONLY))


def generate(out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
    ]
    # protoc resolves the relative names against -I, so run from the proto root.
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    out_dir = parser.parse_args().out.resolve()
    generate(out_dir)
    print(f"generated {len(proto_files())} protos into {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
