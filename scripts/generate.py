"""Regenerate generated/ from protos/ and third_party/ (grpc_tools.protoc + mypy-protobuf).

Usage: python scripts/generate.py [--check]
--check regenerates into a temporary folder and fails when generated/ differs (stale stubs).
"""

from __future__ import annotations

import filecmp
import importlib.resources
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "protos", ROOT / "third_party"]
OUT = ROOT / "generated"
# mypy-protobuf installs its protoc plugins beside the interpreter running this script.
BIN = Path(sys.executable).parent


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(src)) for src in SOURCES for p in src.rglob("*.proto"))


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        *(f"-I{src}" for src in SOURCES),
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *proto_files(),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Regular packages, so that `import huleedu.content.v1.content_pb2` works from an install.
    for folder in [p for p in out.rglob("*") if p.is_dir()] + [out / "huleedu", out / "buf"]:
        (folder / "__init__.py").touch()
    (out / "huleedu" / "py.typed").touch()


def differences(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    found = [f"only in {cmp.left}: {n}" for n in cmp.left_only]
    found += [f"only in {cmp.right}: {n}" for n in cmp.right_only]
    found += [f"differs: {Path(cmp.left) / n}" for n in cmp.diff_files]
    for sub in cmp.common_dirs:
        found += differences(Path(a) / sub, Path(b) / sub)
    return found


def main() -> None:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = differences(OUT, Path(tmp))
        if stale:
            print("generated/ is stale; run `make generate`:\n  " + "\n  ".join(stale))
            raise SystemExit(1)
        print("generated/ is up to date")
        return
    shutil.rmtree(OUT, ignore_errors=True)
    generate(OUT)
    print(f"generated {len(proto_files())} proto files into generated/")


if __name__ == "__main__":
    main()
