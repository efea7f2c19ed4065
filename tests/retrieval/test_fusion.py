"""Hybrid fusion (`LLMOPS_HYBRID_FUSION`) on both adapters: DBSF by default, RRF on request.

The two are told apart by their scores: RRF can give at most 1/(k+1) per side, so
2/61 to a chunk first on both sides, while DBSF adds two scores normalised by each
side's spread, near 1 each for a chunk that stands out on both.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from retrieval.settings import RetrievalSettings
from retrieval.store import EdgeStore, QdrantServerStore, VectorStore, open_store
from retrieval.store.points import RRF_K, Fusion
from tests.retrieval.test_store import DIM, blend, chunk, doc, query, unit

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect")

RRF_BEST = 2 / (RRF_K + 1)


def _open(adapter: str, path: Path, fusion: Fusion) -> VectorStore:
    if adapter == "edge":
        return EdgeStore(path, dim=DIM, fusion=fusion)
    return QdrantServerStore(QdrantClient(location=":memory:"), dim=DIM, fusion=fusion)


@pytest.fixture(params=["edge", "server"])
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _index(store: VectorStore) -> list[float]:
    """Filler chunks, and one chunk that is both the nearest vector and the BM25 match."""
    q = unit("the question")
    notes = [f"routine note number {i} about the weather" for i in range(20)]
    filler = doc("t", "filler", 1, notes)
    store.replace_document("t", "filler", 1, filler)
    text = "zymurgy is the chemistry of fermentation"
    answer = chunk("t", "answer", 1, 0, text, dense=blend(q, unit("noise"), 0.1))
    store.replace_document("t", "answer", 1, [answer])
    return q


@pytest.mark.parametrize("fusion", ["dbsf", "rrf"])
def test_a_chunk_first_on_both_sides_ranks_first(
    adapter: str, tmp_path: Path, fusion: Fusion
) -> None:
    store = _open(adapter, tmp_path / "qdrant", fusion)
    try:
        q = _index(store)
        hits = store.search(query("t", "what is zymurgy", "hybrid", dense=q))
        assert hits[0].doc_id == "answer"
        if fusion == "rrf":
            assert hits[0].score == pytest.approx(RRF_BEST, rel=0.05)
        else:
            assert hits[0].score > 1.0 > RRF_BEST
        assert all(h.score < hits[0].score for h in hits[1:])
    finally:
        store.close()


def test_the_default_and_the_setting_pick_the_fusion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert RetrievalSettings().hybrid_fusion == "dbsf"
    monkeypatch.setenv("LLMOPS_HYBRID_FUSION", "rrf")
    settings = RetrievalSettings()
    store = open_store(tmp_path, None, fusion=settings.hybrid_fusion)
    try:
        hits = store.search(query("t", "what is zymurgy", "hybrid", dense=_index(store)))
        assert hits[0].score == pytest.approx(RRF_BEST, rel=0.05)
    finally:
        store.close()
    monkeypatch.setenv("LLMOPS_HYBRID_FUSION", "borda")
    with pytest.raises(ValueError, match="hybrid_fusion"):
        RetrievalSettings()
