"""bench/ir_metrics.py: metrics against hand-computed values, and the vendored SciFact set.

No ``__init__.py`` in this folder on purpose: with one, pytest would import this file as
``bench.test_ir_metrics`` and the name ``bench`` would point here instead of at the
repository's ``bench/`` folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.ir_metrics import dedupe_docs, load_beir, ndcg_at_k, recall_at_k  # noqa: E402

SCIFACT = REPO_ROOT / "bench" / "data" / "scifact"

# 1 / log2(r + 1): the discount at rank r.
D2 = 0.6309297535714575  # rank 2: 1 / log2(3)
D4 = 0.43067655807339306  # rank 4: 1 / log2(5)


# ------------------------------------------------------------------------------- nDCG@k


def test_ndcg_perfect_ranking_is_one() -> None:
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 2, "d": 1}}
    ranked = {"q1": ["a", "b", "x"], "q2": ["c", "d"]}
    assert ndcg_at_k(ranked, qrels) == pytest.approx(1.0)


def test_ndcg_binary_partial() -> None:
    # Relevant a, b found at ranks 2 and 4.
    # DCG  = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068 = 1.06161
    # IDCG = 1/log2(2) + 1/log2(3) = 1 + 0.63093      = 1.63093
    # nDCG = 1.06161 / 1.63093 = 0.65092
    qrels = {"q1": {"a": 1, "b": 1}}
    ranked = {"q1": ["x", "a", "y", "b"]}
    assert ndcg_at_k(ranked, qrels) == pytest.approx((D2 + D4) / (1 + D2))
    assert ndcg_at_k(ranked, qrels) == pytest.approx(0.65092, abs=1e-5)


def test_ndcg_graded_uses_linear_gain() -> None:
    # Labels a=2, b=1, c=0; ranking b, a.
    # DCG  = 1/log2(2) + 2/log2(3) = 1 + 1.26186 = 2.26186
    # IDCG = 2/log2(2) + 1/log2(3) = 2 + 0.63093 = 2.63093  (c's 0 adds nothing)
    # nDCG = 2.26186 / 2.63093 = 0.85972
    qrels = {"q1": {"a": 2, "b": 1, "c": 0}}
    ranked = {"q1": ["b", "a"]}
    assert ndcg_at_k(ranked, qrels) == pytest.approx((1 + 2 * D2) / (2 + D2))
    assert ndcg_at_k(ranked, qrels) == pytest.approx(0.85972, abs=1e-5)


def test_ndcg_cutoff() -> None:
    # The only relevant doc sits at rank 2: nDCG@1 = 0, nDCG@2 = (1/log2(3)) / 1 = 0.63093.
    qrels = {"q1": {"a": 1}}
    ranked = {"q1": ["x", "a"]}
    assert ndcg_at_k(ranked, qrels, k=1) == 0.0
    assert ndcg_at_k(ranked, qrels, k=2) == pytest.approx(D2)


def test_ndcg_ideal_is_cut_at_k() -> None:
    # Three relevant docs, k=1: IDCG@1 = 1 and the top doc is relevant, so nDCG@1 = 1.
    qrels = {"q1": {"a": 1, "b": 1, "c": 1}}
    assert ndcg_at_k({"q1": ["b"]}, qrels, k=1) == pytest.approx(1.0)


def test_mean_over_judged_queries_missing_results_score_zero() -> None:
    # q1 perfect (1.0), q2 absent from the run (0.0): mean 0.5. q3 is not judged: ignored.
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    ranked = {"q1": ["a"], "q3": ["b"]}
    assert ndcg_at_k(ranked, qrels) == pytest.approx(0.5)
    assert recall_at_k(ranked, qrels) == pytest.approx(0.5)
    assert ndcg_at_k({"q1": ["a"], "q2": []}, qrels) == pytest.approx(0.5)


def test_queries_without_relevant_judgments_are_skipped() -> None:
    # q2 has only a 0 label: neither metric is defined for it, so only q1 counts.
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}}
    ranked = {"q1": ["a"], "q2": ["b"]}
    assert ndcg_at_k(ranked, qrels) == pytest.approx(1.0)
    assert recall_at_k(ranked, qrels) == pytest.approx(1.0)


def test_repeated_doc_counts_once() -> None:
    qrels = {"q1": {"a": 1}}
    assert ndcg_at_k({"q1": ["a", "a", "a"]}, qrels) == pytest.approx(1.0)
    # a, a, b with b relevant: the duplicate is dropped, so b is at rank 2, not 3.
    qrels2 = {"q1": {"a": 1, "b": 1}}
    assert ndcg_at_k({"q1": ["a", "a", "b"]}, qrels2) == pytest.approx(1.0)


def test_empty_or_unjudged_qrels_and_bad_k_raise() -> None:
    with pytest.raises(ValueError):
        ndcg_at_k({"q1": ["a"]}, {})
    with pytest.raises(ValueError):
        recall_at_k({"q1": ["a"]}, {"q1": {"a": 0}})
    with pytest.raises(ValueError):
        ndcg_at_k({"q1": ["a"]}, {"q1": {"a": 1}}, k=0)


# ----------------------------------------------------------------------------- Recall@k


def test_recall_partial_and_ignores_zero_labels() -> None:
    # Relevant = {a, b, c} (d is judged 0). Ranking a, d, x, b.
    # top-3 = {a, d, x}: 1 of 3 relevant -> 0.33333; top-4 adds b: 2 of 3 -> 0.66667.
    qrels = {"q1": {"a": 1, "b": 1, "c": 1, "d": 0}}
    ranked = {"q1": ["a", "d", "x", "b"]}
    assert recall_at_k(ranked, qrels, k=3) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, qrels, k=4) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, qrels, k=100) == pytest.approx(2 / 3)


def test_recall_mean_over_queries() -> None:
    # q1: 1/2 found, q2: 1/1 found -> mean (0.5 + 1.0) / 2 = 0.75.
    qrels = {"q1": {"a": 1, "b": 2}, "q2": {"c": 1}}
    ranked = {"q1": ["a", "x"], "q2": ["y", "c"]}
    assert recall_at_k(ranked, qrels, k=10) == pytest.approx(0.75)


# ------------------------------------------------------------------------- dedupe_docs


def test_dedupe_docs_keeps_best_chunk_per_doc() -> None:
    hits = [("d1", 0.5), ("d2", 0.9), ("d1", 0.8), ("d3", 0.1), ("d2", 0.2)]
    # Sorted: d2 .9, d1 .8, d1 .5, d2 .2, d3 .1 -> each doc at its best chunk's rank.
    assert dedupe_docs(hits) == ["d2", "d1", "d3"]


def test_dedupe_docs_ties_keep_input_order_and_empty() -> None:
    assert dedupe_docs([("b", 0.5), ("a", 0.5), ("b", 0.4)]) == ["b", "a"]
    assert dedupe_docs([]) == []


def test_dedupe_then_score() -> None:
    # Chunks of d1 take the top two slots; folding lets d2 reach rank 2 for nDCG@2.
    hits = [("d1", 0.9), ("d1", 0.8), ("d2", 0.7)]
    qrels = {"q1": {"d1": 1, "d2": 1}}
    assert ndcg_at_k({"q1": dedupe_docs(hits)}, qrels, k=2) == pytest.approx(1.0)


# --------------------------------------------------------------------------- load_beir


def test_load_beir_vendored_scifact_counts() -> None:
    corpus, queries, qrels = load_beir(SCIFACT)
    # Official BEIR SciFact test split: 5,183 docs, 300 queries, 339 judgments (all label 1).
    assert len(corpus) == 5183
    assert len(queries) == 300
    assert set(queries) == set(qrels)
    assert sum(len(judged) for judged in qrels.values()) == 339
    assert {label for judged in qrels.values() for label in judged.values()} == {1}
    assert all(doc_id in corpus for judged in qrels.values() for doc_id in judged)
    assert corpus["4983"]["title"].startswith("Microstructural development of human newborn")
    assert queries["1"] == "0-dimensional biomaterials show inductive properties."
    assert qrels["36"] == {"5152028": 1, "11705328": 1}
    # Judgments as their own ranking score perfectly.
    assert ndcg_at_k({q: list(j) for q, j in qrels.items()}, qrels) == pytest.approx(1.0)


def test_vendored_files_match_source_md_hashes() -> None:
    source = (SCIFACT / "SOURCE.md").read_text(encoding="utf-8")
    # Table rows: | `name` | what | `sha256` |
    listed = dict(re.findall(r"^\| `([\w.-]+)` \|.*\| `([0-9a-f]{64})` \|$", source, re.MULTILINE))
    for name in ("corpus.jsonl.gz", "queries.jsonl", "qrels-test.tsv", "published.json"):
        digest = hashlib.sha256((SCIFACT / name).read_bytes()).hexdigest()
        assert listed.get(name) == digest, name


def test_published_json_shape() -> None:
    entries = json.loads((SCIFACT / "published.json").read_text(encoding="utf-8"))
    assert isinstance(entries, list)
    models = {entry["model"] for entry in entries}
    assert {"BM25", "sentence-transformers/all-MiniLM-L6-v2"} <= models
    for entry in entries:
        assert 0.0 < entry["ndcg_at_10"] < 1.0
        assert entry["source"]


def test_load_beir_upstream_layout(tmp_path: Path) -> None:
    # BEIR's own layout: plain corpus.jsonl and qrels/<split>.tsv; unjudged queries dropped.
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "T1", "text": "one"}\n{"_id": "d2", "text": "two"}\n',
        encoding="utf-8",
    )
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "unjudged"}\n', encoding="utf-8"
    )
    (tmp_path / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n", encoding="utf-8"
    )
    corpus, queries, qrels = load_beir(tmp_path)
    assert corpus == {"d1": {"title": "T1", "text": "one"}, "d2": {"title": "", "text": "two"}}
    assert queries == {"q1": "first"}
    assert qrels == {"q1": {"d1": 2, "d2": 0}}


def test_load_beir_rejects_judged_query_without_text(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n', encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "a"}\n', encoding="utf-8")
    (tmp_path / "qrels-test.tsv").write_text("q9\td1\t1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="without text"):
        load_beir(tmp_path)
