"""Python stubs for Tally's wire contract, generated at import time from proto/ with
grpc_tools.protoc into a temporary directory: nothing generated is checked in, and
nothing here shares code with Tally's Rust gRPC stack."""

import atexit
import os
import shutil
import sys
import tempfile

from grpc_tools import protoc

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "proto")


def _generate():
    out = tempfile.mkdtemp(prefix="tally-pb-")
    atexit.register(shutil.rmtree, out, True)
    files = [os.path.join("tally", "v1", f) for f in ("licensing.proto", "admin.proto")]
    # protoc's own well-known types ship inside grpc_tools.
    wkt = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{wkt}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + files) != 0:
        raise SystemExit(f"grpc_tools.protoc failed on {files} under {PROTO_ROOT}")
    sys.path.insert(0, out)


_generate()

from tally.v1 import admin_pb2 as admin  # noqa: E402
from tally.v1 import admin_pb2_grpc as admin_grpc  # noqa: E402
from tally.v1 import licensing_pb2 as lic  # noqa: E402
from tally.v1 import licensing_pb2_grpc as lic_grpc  # noqa: E402

__all__ = ["admin", "admin_grpc", "lic", "lic_grpc"]
