"""The retrieval tuning set (bench/data/scifact-train) is what SOURCE.md says, and held out.

Settings are chosen on it, so it must never share a query with the SciFact test split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from bench.ir_metrics import load_beir, load_queries

DATA = Path(__file__).resolve().parents[2] / "bench" / "data"
SHA256 = {
    "qrels-dev.tsv": "2bb1e629eb21a4e6ef601b0f048fcd435685453e7d6e0dfaaee0afbce407dfb3",
    "queries.jsonl": "c7c73cb365124d9c1c53642f8c2c9ff5ece9666fb3e513641cebed0e4fa0a241",
}


def test_the_files_are_the_documented_ones() -> None:
    for name, digest in SHA256.items():
        assert hashlib.sha256((DATA / "scifact-train" / name).read_bytes()).hexdigest() == digest


def test_held_out_from_the_test_split_and_judging_the_same_corpus() -> None:
    queries, qrels = load_queries(DATA / "scifact-train", "dev")
    corpus, test_queries, _ = load_beir(DATA / "scifact")
    assert len(queries) == 300
    assert sum(len(judged) for judged in qrels.values()) == 354
    assert not set(queries) & set(test_queries)
    assert not set(queries.values()) & set(test_queries.values())
    assert all(doc_id in corpus for judged in qrels.values() for doc_id in judged)
