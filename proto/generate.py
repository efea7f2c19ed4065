"""Generate Python code, gRPC stubs and mypy stubs from proto/ into libs/llmops/v1.

Run by `make proto` (and `make setup`). `--check` regenerates into a temporary
folder and exits non-zero when libs/llmops/v1 differs, so stale code fails CI.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "libs"
PACKAGE = Path("llmops") / "v1"
BIN = Path(sys.executable).parent  # the venv's bin, where mypy-protobuf installs its plugins


def generate(out_dir: Path) -> list[Path]:
    """Run protoc for every .proto under proto/llmops/v1 into out_dir; return the files made."""
    protos = sorted((PROTO_DIR / PACKAGE).glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p.relative_to(PROTO_DIR)) for p in protos),
    ]
    target = out_dir / PACKAGE
    target.mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (target / "__init__.py").write_text(
        '"""Generated from proto/llmops/v1 by proto/generate.py."""\n'
    )
    (target / "py.typed").write_text("")
    return sorted(p for p in target.iterdir() if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the generated code is stale")
    args = parser.parse_args()
    if not args.check:
        shutil.rmtree(OUT_DIR / PACKAGE, ignore_errors=True)
        made = generate(OUT_DIR)
        print(f"generated {len(made)} files in {OUT_DIR / PACKAGE}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        names = {p.name for p in fresh}
        current = OUT_DIR / PACKAGE
        have = {p.name for p in current.iterdir() if p.is_file()} if current.is_dir() else set()
        stale = sorted(names ^ have)
        stale += [
            n
            for n in sorted(names & have)
            if not filecmp.cmp(Path(tmp) / PACKAGE / n, current / n, shallow=False)
        ]
        if stale:
            print("stale generated code (run `make proto`): " + ", ".join(stale), file=sys.stderr)
            return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
