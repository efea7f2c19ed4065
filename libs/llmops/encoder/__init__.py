"""The sentence encoder (an exported ONNX model, no torch) shared by embedding and guardrails."""

from llmops.encoder.errors import EmbeddingModelError
from llmops.encoder.manifest import MANIFEST_FILE, ModelManifest, load_manifest
from llmops.encoder.onnx import EncodeResult, OnnxEncoder

__all__ = [
    "MANIFEST_FILE",
    "EmbeddingModelError",
    "EncodeResult",
    "ModelManifest",
    "OnnxEncoder",
    "load_manifest",
]
