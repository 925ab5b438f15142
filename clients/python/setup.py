"""Builds the client with the generated stubs it imports (paygrid.v1,
paygrid.type.v1), made from the checkout's protos/ at build time: generated
code is never checked in nor edited by hand."""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROTO_ROOT = Path(__file__).resolve().parent.parent.parent / "protos"
# Served by googleapis-common-protos (grpcio-status's dependency): not generated here.
IMPORTED_ONLY = PROTO_ROOT / "google"
# The client speaks paygrid.v1 (and the types it uses); the channel protocol is the server's.
CLIENT_PROTOS = ("paygrid/v1", "paygrid/type/v1")


class BuildWithStubs(build_py):
    def run(self) -> None:
        super().run()
        import grpc_tools
        from grpc_tools import protoc

        if not PROTO_ROOT.is_dir():
            raise SystemExit(f"protos not found at {PROTO_ROOT}: build from a paygrid checkout")
        protos = sorted(str(p.relative_to(PROTO_ROOT)) for folder in CLIENT_PROTOS
                        for p in (PROTO_ROOT / folder).glob("*.proto"))
        out = Path(self.build_lib)
        out.mkdir(parents=True, exist_ok=True)
        well_known = Path(grpc_tools.__file__).parent / "_proto"
        code = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}",
                            f"--python_out={out}", f"--pyi_out={out}",
                            f"--grpc_python_out={out}", *protos])
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")


setup(cmdclass={"build_py": BuildWithStubs})
