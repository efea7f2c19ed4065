"""The retrieval store, run against both adapters: Qdrant Edge on disk, qdrant-client local mode.

Dense vectors are made here, never by the embedding model: hash-seeded random unit
vectors where meaning does not matter, and crafted ones where a ranking is asserted.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from retrieval.store import (
    ChunkRecord,
    EdgeStore,
    QdrantServerStore,
    SearchMode,
    SearchQuery,
    StoreError,
    VectorStore,
    factory,
    open_store,
)

# qdrant-client local mode warns that it ignores payload indexes.
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect")

DIM = 384
MODES: tuple[SearchMode, ...] = ("dense", "sparse", "hybrid")


def unit(seed: str) -> list[float]:
    """A deterministic random unit vector: unrelated seeds are nearly orthogonal."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8]))
    v = rng.normal(size=DIM)
    return [float(x) for x in v / np.linalg.norm(v)]


def blend(a: list[float], b: list[float], weight: float) -> list[float]:
    """Unit vector between a and b; cosine to a falls as weight grows."""
    v = (1 - weight) * np.asarray(a) + weight * np.asarray(b)
    return [float(x) for x in v / np.linalg.norm(v)]


def chunk(
    tenant: str,
    doc_id: str,
    version: int,
    index: int,
    text: str,
    *,
    collection: str = "default",
    metadata: dict[str, str] | None = None,
    dense: list[float] | None = None,
) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{doc_id}/{version}/{index}")),
        tenant=tenant,
        doc_id=doc_id,
        collection=collection,
        version=version,
        index=index,
        text=text,
        heading=f"Section {index}",
        source=f"file://{doc_id}.md",
        title=doc_id.title(),
        metadata=metadata or {},
        dense=dense if dense is not None else unit(f"{tenant}/{doc_id}/{version}/{index}"),
    )


def doc(
    tenant: str,
    doc_id: str,
    version: int,
    texts: list[str],
    *,
    collection: str = "default",
    metadata: dict[str, str] | None = None,
) -> list[ChunkRecord]:
    return [
        chunk(tenant, doc_id, version, i, t, collection=collection, metadata=metadata)
        for i, t in enumerate(texts)
    ]


def query(
    tenant: str,
    text: str,
    mode: SearchMode = "hybrid",
    *,
    dense: list[float] | None = None,
    top_k: int = 10,
    collection: str = "",
    filters: dict[str, str] | None = None,
) -> SearchQuery:
    return SearchQuery(
        tenant=tenant,
        text=text,
        dense=dense if dense is not None else unit(f"query:{text}"),
        top_k=top_k,
        collection=collection,
        filters=filters or {},
        mode=mode,
    )


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    s: VectorStore
    if request.param == "edge":
        s = EdgeStore(tmp_path / "qdrant", dim=DIM)
    else:
        s = QdrantServerStore(QdrantClient(location=":memory:"), dim=DIM)
    yield s
    s.close()


def test_a_new_store_is_empty(store: VectorStore) -> None:
    assert store.document_version("t", "never") is None
    assert store.count("t") == 0


@pytest.mark.parametrize("mode", MODES)
def test_tenant_never_sees_another_tenants_chunks(store: VectorStore, mode: SearchMode) -> None:
    text = "Invoice ERR-4711 means the payment provider timed out"
    q_dense = unit("the question")
    # Tenant A's chunk is the perfect match for the query, B's a weaker one.
    store.replace_document("a", "doc", 1, [chunk("a", "doc", 1, 0, text, dense=q_dense)])
    store.replace_document(
        "b", "doc", 1, [chunk("b", "doc", 1, 0, text, dense=blend(q_dense, unit("x"), 0.5))]
    )

    hits_b = store.search(query("b", "ERR-4711 payment", mode, dense=q_dense))
    hits_a = store.search(query("a", "ERR-4711 payment", mode, dense=q_dense))
    hits_c = store.search(query("c", "ERR-4711 payment", mode, dense=q_dense))

    a_id, b_id = chunk("a", "doc", 1, 0, "").chunk_id, chunk("b", "doc", 1, 0, "").chunk_id
    assert [h.chunk_id for h in hits_b] == [b_id]
    assert [h.chunk_id for h in hits_a] == [a_id]
    assert hits_c == []
    assert store.count("a") == store.count("b") == 1


def test_collection_and_metadata_filters(store: VectorStore) -> None:
    text = "quarterly planning notes"
    store.replace_document(
        "t", "hr-en", 1, doc("t", "hr-en", 1, [text], collection="hr", metadata={"lang": "en"})
    )
    store.replace_document(
        "t",
        "eng-de",
        1,
        doc(
            "t",
            "eng-de",
            1,
            [text],
            collection="eng",
            metadata={"lang": "de", "dept.name": "r&d=1"},
        ),
    )
    store.replace_document(
        "t", "eng-en", 1, doc("t", "eng-en", 1, [text], collection="eng", metadata={"lang": "en"})
    )

    def docs(collection: str = "", filters: dict[str, str] | None = None) -> set[str]:
        q = query("t", "planning", "hybrid", collection=collection, filters=filters)
        return {h.doc_id for h in store.search(q)}

    assert docs() == {"hr-en", "eng-de", "eng-en"}
    assert docs(collection="eng") == {"eng-de", "eng-en"}
    assert docs(filters={"lang": "en"}) == {"hr-en", "eng-en"}
    assert docs(collection="eng", filters={"lang": "en"}) == {"eng-en"}
    assert docs(filters={"dept.name": "r&d=1"}) == {"eng-de"}
    assert docs(filters={"lang": "en", "dept.name": "r&d=1"}) == set()
    assert docs(filters={"lang": "fr"}) == set()
    (hit,) = store.search(query("t", "planning", "sparse", filters={"dept.name": "r&d=1"}))
    assert hit.metadata == {"lang": "de", "dept.name": "r&d=1"}
    assert hit.collection == "eng"


@pytest.mark.parametrize("mode", ["sparse", "hybrid"])
def test_bm25_finds_an_exact_code(store: VectorStore, mode: SearchMode) -> None:
    filler = [f"The payment service handles request number {i} without trouble" for i in range(30)]
    store.replace_document("t", "runbook", 1, doc("t", "runbook", 1, filler))
    store.replace_document(
        "t",
        "errors",
        1,
        doc(
            "t",
            "errors",
            1,
            ["ERR-4712 is a retry warning", "ERR-4711 means the card was declined"],
        ),
    )
    # The dense query points nowhere near the answer: only BM25 can find it.
    hits = store.search(query("t", "what does ERR-4711 mean", mode, dense=unit("unrelated")))
    assert hits[0].doc_id == "errors"
    assert hits[0].text == "ERR-4711 means the card was declined"
    assert isinstance(hits[0].score, float)
    assert hits[0].score > hits[1].score


def test_dense_ranking_follows_cosine(store: VectorStore) -> None:
    q = unit("q")
    texts = ["exact", "close", "far"]
    vectors = [q, blend(q, unit("o"), 0.3), unit("o")]
    store.replace_document(
        "t",
        "d",
        1,
        [
            chunk("t", "d", 1, i, t, dense=v)
            for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
        ],
    )
    hits = store.search(query("t", "anything", "dense", dense=q))
    assert [h.text for h in hits] == texts
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert 0.5 < hits[1].score < 0.99
    assert abs(hits[2].score) < 0.2
    first = hits[0]
    assert (first.doc_id, first.index, first.version, first.heading, first.source, first.title) == (
        "d",
        0,
        1,
        "Section 0",
        "file://d.md",
        "D",
    )


def test_new_version_replaces_old_chunks(store: VectorStore) -> None:
    assert store.replace_document(
        "t", "d", 1, doc("t", "d", 1, ["zebra one", "zebra two", "zebra three"])
    )
    assert store.replace_document("t", "d", 2, doc("t", "d", 2, ["giraffe one", "giraffe two"]))

    assert store.count("t") == 2
    assert store.document_version("t", "d") == 2
    assert store.search(query("t", "zebra", "sparse")) == []
    hits = store.search(query("t", "giraffe", "hybrid"))
    assert sorted(h.text for h in hits) == ["giraffe one", "giraffe two"]
    assert {h.version for h in hits} == {2}


def test_same_version_reapplied_is_idempotent(store: VectorStore) -> None:
    chunks = doc("t", "d", 3, ["a lion", "a tiger", "a bear"])
    assert store.replace_document("t", "d", 3, chunks)
    assert store.replace_document("t", "d", 3, chunks)
    assert store.count("t") == 3
    hits = store.search(query("t", "lion tiger bear", "hybrid"))
    assert len({h.chunk_id for h in hits}) == len(hits) == 3
    # A redelivered version with fewer chunks still ends up exactly those chunks.
    assert store.replace_document("t", "d", 3, chunks[:2])
    assert store.count("t") == 2


def test_stale_older_version_is_rejected(store: VectorStore) -> None:
    assert store.replace_document("t", "d", 5, doc("t", "d", 5, ["current text about owls"]))
    assert not store.replace_document("t", "d", 4, doc("t", "d", 4, ["older text about bats"]))

    assert store.document_version("t", "d") == 5
    assert store.count("t") == 1
    assert store.search(query("t", "bats", "sparse")) == []
    assert [h.version for h in store.search(query("t", "owls", "sparse"))] == [5]


def test_delete_leaves_a_tombstone_that_rejects_older_versions(store: VectorStore) -> None:
    store.replace_document("t", "d", 1, doc("t", "d", 1, ["penguins live in the south"]))
    store.replace_document("t", "keep", 1, doc("t", "keep", 1, ["penguins are birds"]))
    store.replace_document("u", "d", 1, doc("u", "d", 1, ["penguins of tenant u"]))

    assert store.delete_document("t", "d", 2)
    assert store.document_version("t", "d") == 2
    assert store.count("t") == 1
    assert store.count("u") == 1
    for mode in MODES:
        hits = store.search(query("t", "penguins", mode))
        assert [h.doc_id for h in hits] == ["keep"], mode

    assert not store.replace_document("t", "d", 1, doc("t", "d", 1, ["late v1"]))
    assert not store.replace_document("t", "d", 2, doc("t", "d", 2, ["same version as delete"]))
    assert not store.delete_document("t", "d", 2)
    assert not store.delete_document("t", "d", 1)
    assert store.count("t") == 1

    assert store.replace_document("t", "d", 3, doc("t", "d", 3, ["penguins are back"]))
    assert store.count("t") == 2
    assert store.document_version("t", "d") == 3


def test_delete_of_unseen_document_blocks_its_late_versions(store: VectorStore) -> None:
    assert store.delete_document("t", "ghost", 4)
    assert store.document_version("t", "ghost") == 4
    assert not store.replace_document("t", "ghost", 3, doc("t", "ghost", 3, ["late"]))
    assert store.count("t") == 0
    assert store.search(query("t", "late", "sparse")) == []


def test_optimize_keeps_content(store: VectorStore) -> None:
    for v in range(1, 4):
        store.replace_document(
            "t", "d", v, doc("t", "d", v, [f"version {v} of the moose", "moose"])
        )
    store.optimize()
    assert store.count("t") == 2
    assert {h.version for h in store.search(query("t", "moose", "hybrid"))} == {3}


def test_invalid_arguments_raise_value_error(store: VectorStore) -> None:
    with pytest.raises(ValueError, match="not"):
        store.replace_document("t", "d", 1, [chunk("other", "d", 1, 0, "x")])
    with pytest.raises(ValueError, match="dims"):
        store.replace_document("t", "d", 1, [chunk("t", "d", 1, 0, "x", dense=[1.0, 0.0])])
    with pytest.raises(ValueError, match="dense query vector"):
        store.search(SearchQuery(tenant="t", text="x", dense=None, top_k=3))
    with pytest.raises(ValueError, match="top_k"):
        store.search(query("t", "x", top_k=0))
    assert store.search(SearchQuery(tenant="t", text="x", dense=None, top_k=3, mode="sparse")) == []
    assert store.document_version("t", "d") is None


def test_edge_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    first = EdgeStore(path, dim=DIM)
    first.replace_document("t", "d", 2, doc("t", "d", 2, ["walrus facts", "more walrus"]))
    first.delete_document("t", "gone", 7)
    first.close()

    again = EdgeStore(path, dim=DIM)
    try:
        assert again.count("t") == 2
        assert again.document_version("t", "d") == 2
        assert again.document_version("t", "gone") == 7
        assert not again.replace_document("t", "d", 1, doc("t", "d", 1, ["stale"]))
        assert len(again.search(query("t", "walrus", "hybrid"))) == 2
    finally:
        again.close()


def test_edge_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from test_store import doc
        from retrieval.store import EdgeStore
        store = EdgeStore(Path({str(path)!r}), dim={DIM})
        store.replace_document("t", "d", 1, doc("t", "d", 1, ["narwhal one", "narwhal two"]))
        store.replace_document("t", "d", 2, doc("t", "d", 2, ["narwhal v2"]))
        store.delete_document("t", "x", 9)
        os.kill(os.getpid(), signal.SIGKILL)  # no flush, no close
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr.decode()

    store = EdgeStore(path, dim=DIM)
    try:
        assert store.count("t") == 1
        assert store.document_version("t", "d") == 2
        assert store.document_version("t", "x") == 9
        assert [h.text for h in store.search(query("t", "narwhal", "sparse"))] == ["narwhal v2"]
    finally:
        store.close()


def test_edge_refuses_a_second_opener_and_a_dimension_change(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    store = EdgeStore(path, dim=DIM)
    with pytest.raises(StoreError, match="opening the Qdrant Edge shard"):
        EdgeStore(path, dim=DIM)
    store.close()
    with pytest.raises(StoreError, match="incompatible"):
        EdgeStore(path, dim=8)


def test_open_store_picks_the_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edge = open_store(tmp_path, None)
    try:
        assert isinstance(edge, EdgeStore)
        assert (tmp_path / "qdrant" / "edge_config.json").exists()
    finally:
        edge.close()

    seen: list[tuple[str, str | None]] = []

    def local_client(url: str, api_key: str | None) -> QdrantClient:
        seen.append((url, api_key))
        return QdrantClient(location=":memory:")

    monkeypatch.setattr(factory, "QdrantClient", local_client)
    server = open_store(tmp_path / "unused", "http://qdrant:6333", "secret")
    try:
        assert isinstance(server, QdrantServerStore)
        assert seen == [("http://qdrant:6333", "secret")]
        assert not (tmp_path / "unused").exists()
    finally:
        server.close()


def test_server_store_fails_with_store_error_when_unreachable() -> None:
    client = QdrantClient(url="http://127.0.0.1:9", check_compatibility=False, timeout=2)
    with pytest.raises(StoreError, match="preparing Qdrant collection llmops_chunks"):
        QdrantServerStore(client)


def test_server_store_refuses_a_collection_of_another_shape() -> None:
    client = QdrantClient(location=":memory:")
    client.create_collection(
        "llmops_chunks",
        vectors_config={"dense": models.VectorParams(size=8, distance=models.Distance.COSINE)},
    )
    with pytest.raises(StoreError, match="lacks a 384-d vector"):
        QdrantServerStore(client)
