"""The codebase's own contracts: fresh generated code, service boundaries, lint, types."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# deploy/triton: the Triton python models (not importable packages, but held to the same rules).
LINTED = ("libs", "services", "tests", "bench", "proto", "deploy/triton")


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)


def test_generated_protobuf_code_is_fresh() -> None:
    result = run(sys.executable, "proto/generate.py", "--check")
    assert result.returncode == 0, result.stderr


def test_stale_generated_code_is_detected(tmp_path: Path) -> None:
    """The freshness check must fail when the generated code differs from proto/."""
    generated = ROOT / "libs" / "llmops" / "v1" / "retrieval_pb2.pyi"
    original = generated.read_bytes()
    try:
        generated.write_bytes(original + b"\n# edited by hand\n")
        assert run(sys.executable, "proto/generate.py", "--check").returncode == 1
    finally:
        generated.write_bytes(original)


def test_service_boundaries_hold() -> None:
    """Services never import each other, libs never import services, nothing imports torch."""
    result = run(str(BIN / "lint-imports"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean() -> None:
    result = run(str(BIN / "ruff"), "check", *LINTED)
    assert result.returncode == 0, result.stdout


def test_code_is_formatted() -> None:
    result = run(str(BIN / "ruff"), "format", "--check", *LINTED)
    assert result.returncode == 0, result.stdout


@pytest.mark.timeout(900)
def test_mypy_is_clean() -> None:
    result = run(str(BIN / "mypy"), "libs", "services")
    assert result.returncode == 0, result.stdout
