"""The committed gRPC stubs are exactly what grpc_tools.protoc generates from the .proto."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO = Path("ds_serving/proto/datasentinel/scoring/v1/scoring.proto")
GENERATED = ("scoring_pb2.py", "scoring_pb2.pyi", "scoring_pb2_grpc.py")
REGENERATE = (
    "python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. " + str(PROTO)
)


# Tool version stamps differ between grpcio-tools releases without changing the API; everything
# else (messages, fields, services, descriptors) must match byte for byte.
_STAMPS = [
    re.compile(r"^# Protobuf Python Version: .*$", re.M),
    re.compile(r"ValidateProtobufRuntimeVersion\(\s*[^,]+,\s*\d+,\s*\d+,\s*\d+,"),
    re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.M),
]


def _normalize(text: str) -> str:
    for pattern in _STAMPS:
        text = pattern.sub("<version stamp>", text)
    return text


def test_stubs_match_the_proto(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc")
    # same relative path as in the repo, so the generated imports and file names match
    (tmp_path / PROTO.parent).mkdir(parents=True)
    shutil.copy(ROOT / PROTO, tmp_path / PROTO)
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["protoc", f"-I{tmp_path}", f"-I{include}", f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(tmp_path / PROTO)]
    assert protoc.main(args) == 0
    for name in GENERATED:
        fresh = _normalize((tmp_path / PROTO.parent / name).read_text("utf-8"))
        committed = _normalize((ROOT / PROTO.parent / name).read_text("utf-8"))
        assert "<version stamp>" in fresh or name.endswith(".pyi")
        assert fresh == committed, f"{PROTO.parent / name} is stale; regenerate: {REGENERATE}"


def test_service_is_registered_under_its_package() -> None:
    from ds_serving.proto import SERVICE_NAME, scoring_pb2

    assert SERVICE_NAME == "datasentinel.scoring.v1.Scorer"
    methods = scoring_pb2.DESCRIPTOR.services_by_name["Scorer"].methods_by_name
    assert set(methods) == {"Score", "ScoreStream", "GetModelInfo"}
    stream = methods["ScoreStream"]
    assert stream.client_streaming and stream.server_streaming


def test_ds_serving_imports_neither_dagster_nor_torch() -> None:
    """The scorer ships without the training stack: importing every serving module (and running
    the CLI's argument parsing) must not pull in dagster, torch or ds_assets."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import ds_serving.server, ds_serving.cli, ds_serving.client, ds_serving.processes\n"
        "import ds_serving.engines, ds_serving.scoring, ds_serving.bundle, ds_serving.metrics\n"
        "ds_serving.cli.build_parser().parse_args(['serve', '--models', 'm'])\n"
        "print(sorted(m for m in ('dagster', 'torch', 'ds_assets') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
