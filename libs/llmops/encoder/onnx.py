"""Texts in, unit-length vectors out: the exported ONNX model on ONNX Runtime, no torch.

Throughput is the point: embedding is the ingest bottleneck on a small CPU box
(DESIGN.md). So texts are tokenised once, in Rust, for the whole call; sorted
by token length so that each batch is padded only to its own longest text (a
batch of short queries is never padded to 256); and the graph already ends in
mean pooling and L2 normalisation, so what ONNX Runtime returns is the answer.

One encoder may be shared by threads: `InferenceSession.run` and the Rust
tokenizer are both safe to call concurrently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from llmops.encoder.errors import EmbeddingModelError
from llmops.encoder.manifest import Variant, load_manifest, verified_file

Device = Literal["auto", "cpu", "cuda"]

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what `_run` feeds


@dataclass(frozen=True, slots=True)
class EncodeResult:
    """Vectors in input order, and how many model tokens each text became.

    `token_counts` counts what the model saw: after truncation to
    `max_length`, including the [CLS] and [SEP] tokens.
    """

    vectors: npt.NDArray[np.float32]  # (n, dimensions), each row of L2 norm 1
    token_counts: list[int]


class OnnxEncoder:
    """A loaded embedding model; `encode` is the only hot path."""

    def __init__(
        self,
        model_dir: Path,
        variant: Variant = "int8",
        *,
        device: Device = "auto",
        batch_size: int = 32,
        max_length: int = 256,
        intra_op_threads: int | None = None,
    ) -> None:
        manifest = load_manifest(model_dir)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if not 2 <= max_length <= manifest.max_seq_length:
            raise ValueError(
                f"max_length must be in 2..{manifest.max_seq_length}, not {max_length}"
            )
        if variant not in manifest.variants:
            raise EmbeddingModelError(f"{model_dir} has no {variant} variant")
        self._manifest = manifest
        self._batch_size = batch_size
        self._tokenizer = _load_tokenizer(
            verified_file(model_dir, manifest, manifest.tokenizer), max_length
        )
        self._session = _load_session(
            verified_file(model_dir, manifest, manifest.variants[variant]),
            device,
            intra_op_threads,
        )

    @property
    def model_name(self) -> str:
        return self._manifest.name

    @property
    def dimensions(self) -> int:
        return self._manifest.dimensions

    @property
    def providers(self) -> list[str]:
        """The ONNX Runtime execution providers in use, preferred first."""
        providers: list[str] = self._session.get_providers()
        return providers

    def encode(self, texts: Sequence[str]) -> EncodeResult:
        n = len(texts)
        vectors = np.empty((n, self.dimensions), dtype=np.float32)
        if n == 0:
            return EncodeResult(vectors, [])
        token_ids = [e.ids for e in self._tokenizer.encode_batch_fast(list(texts))]
        lengths = np.fromiter(map(len, token_ids), dtype=np.int64, count=n)
        # Longest first: the first batch sizes ONNX Runtime's memory arena once.
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, n, self._batch_size):
            rows = order[start : start + self._batch_size]
            vectors[rows] = self._run(token_ids, rows, lengths[rows])
        return EncodeResult(vectors, lengths.tolist())

    def _run(
        self,
        token_ids: list[list[int]],
        rows: npt.NDArray[np.intp],
        lengths: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.float32]:
        """One ONNX Runtime call for the texts at `rows`, padded to the longest of them."""
        mask = np.arange(lengths[0]) < lengths[:, None]  # lengths are descending
        input_ids = np.zeros(mask.shape, dtype=np.int64)  # 0 is [PAD]
        # Row-major boolean assignment fills each row's first `length` slots, in order.
        input_ids[mask] = np.fromiter(
            chain.from_iterable(token_ids[i] for i in rows),
            dtype=np.int64,
            count=int(lengths.sum()),
        )
        feeds = {
            "input_ids": input_ids,
            "attention_mask": mask.astype(np.int64),
            "token_type_ids": np.zeros_like(input_ids),  # one segment
        }
        (output,) = self._session.run([self._manifest.output], feeds)
        vectors: npt.NDArray[np.float32] = output
        return vectors


def _load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """The model's WordPiece tokenizer, truncating and never padding (`_run` pads)."""
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises bare Exception on a bad file
        raise EmbeddingModelError(f"cannot load tokenizer {path}: {exc}") from exc
    # tokenizer.json ships truncation at 128 and fixed padding to 128: override both.
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    return tokenizer


def _load_session(path: Path, device: Device, intra_op_threads: int | None) -> ort.InferenceSession:
    """A session on CUDA when asked (or when "auto" finds onnxruntime-gpu), else on the CPU.

    On a GPU prefer the fp32 variant: dynamic int8 quantisation is a CPU
    optimisation (sentence-transformers documents it as likely slower on GPUs).
    """
    available = ort.get_available_providers()
    if device == "cuda" and _CUDA not in available:
        raise EmbeddingModelError(
            f"device=cuda but this onnxruntime has no {_CUDA} (install onnxruntime-gpu)"
        )
    providers = [_CUDA, _CPU] if device != "cpu" and _CUDA in available else [_CPU]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises its own exception types from a C++ binding
        raise EmbeddingModelError(f"ONNX Runtime cannot load {path}: {exc}") from exc
    if device == "cuda" and _CUDA not in session.get_providers():
        raise EmbeddingModelError(f"{_CUDA} failed to initialise (CUDA or cuDNN libraries?)")
    names = sorted(i.name for i in session.get_inputs())
    if names != sorted(_INPUTS):
        raise EmbeddingModelError(f"{path} takes inputs {names}, expected {sorted(_INPUTS)}")
    return session
