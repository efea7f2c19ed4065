"""IR evaluation for BEIR-format datasets: loading, nDCG@k, Recall@k, and chunk-to-doc folding.

Everything here is a pure function over plain dicts and lists, so the benchmark driver
(`bench/retrieval.py`) can feed it whatever its retriever returns.

Definitions follow BEIR / trec_eval (`ndcg_cut.k`, `recall.k`, as computed by pytrec_eval):

* **nDCG@k**: gain is the graded relevance label itself (linear gain, negative labels count
  as 0), discount is ``log2(rank + 1)`` with ranks starting at 1, and the ideal DCG is
  computed from the query's judgments sorted by label, cut at ``k``.
* **Recall@k**: ``|relevant ∩ top-k| / |relevant|``, where *relevant* means label > 0.

Both are averaged over the *evaluated queries*: every query in ``qrels`` with at least one
label > 0. A query with no relevant judgments is skipped, because neither metric is defined
for it (trec_eval skips it as well). An evaluated query that is missing from ``ranked``, or
has an empty list, scores 0. This is stricter than BEIR's ``EvaluateRetrieval``, which averages
only over the queries that came back with results. Queries in ``ranked`` but not in ``qrels``
are ignored.

Rankings are lists in rank order; the list order is authoritative (no re-sorting by score,
so there is no tie-breaking rule to match). A doc id repeated in a list counts only at its
first position, so a metric can never go above 1.0.

Chunks vs documents: the platform retrieves *chunks*, while BEIR judges *documents*. Fold
chunk hits into a document ranking with :func:`dedupe_docs` (max-passage: a document ranks
by its best-scoring chunk) before scoring. Fetch enough chunks to fill the cutoff with
*distinct* documents: one long abstract can take several of the top chunk slots.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypedDict

__all__ = [
    "Doc",
    "Qrels",
    "Ranked",
    "dedupe_docs",
    "load_beir",
    "ndcg_at_k",
    "recall_at_k",
]


class Doc(TypedDict):
    """One corpus entry: BEIR's ``title`` and ``text`` fields (either may be empty)."""

    title: str
    text: str


Qrels = Mapping[str, Mapping[str, int]]
"""query id -> {doc id -> graded relevance label}."""

Ranked = Mapping[str, Sequence[str]]
"""query id -> doc ids in rank order (best first)."""


# --------------------------------------------------------------------------- loading


def _read_lines(path: Path) -> Iterator[str]:
    """Non-blank lines of a UTF-8 text file, gunzipped when the name ends in ``.gz``."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            yield from (line for line in fh if line.strip())
    else:
        with path.open(encoding="utf-8") as fh:
            yield from (line for line in fh if line.strip())


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    names = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"none of these files exists: {names}")


def _load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            fields = line.rstrip("\r\n").split("\t")
            if lineno == 1 and fields[0] == "query-id":
                continue  # BEIR header: query-id, corpus-id, score
            if fields == [""]:
                continue
            if len(fields) != 3:
                raise ValueError(f"{path}:{lineno}: expected 3 tab-separated fields")
            qid, doc_id, label = fields
            qrels.setdefault(qid, {})[doc_id] = int(label)
    return qrels


def load_queries(
    data_dir: str | Path, split: str = "test"
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """A BEIR-format directory's judged queries of `split` and their qrels, without the corpus.

    For a query set kept apart from the corpus it searches (``bench/data/scifact-train``
    judges the ``bench/data/scifact`` corpus). ``queries`` holds only the queries that have
    judgments in this split; raises ``ValueError`` on a judged query that has no text.
    """
    root = Path(data_dir)
    qrels_path = _first_existing(root / f"qrels-{split}.tsv", root / "qrels" / f"{split}.tsv")
    queries_path = _first_existing(root / "queries.jsonl", root / "queries.jsonl.gz")
    qrels = _load_qrels(qrels_path)
    all_queries: dict[str, str] = {}
    for line in _read_lines(queries_path):
        row = json.loads(line)
        all_queries[str(row["_id"])] = str(row["text"])
    missing = sorted(qid for qid in qrels if qid not in all_queries)
    if missing:
        raise ValueError(f"{queries_path}: judged queries without text: {missing[:5]}")
    return {qid: all_queries[qid] for qid in qrels}, qrels


def load_beir(
    data_dir: str | Path, split: str = "test"
) -> tuple[dict[str, Doc], dict[str, str], dict[str, dict[str, int]]]:
    """Load a BEIR-format dataset directory.

    Accepts the layout vendored under ``bench/data/<name>/`` (``corpus.jsonl.gz``,
    ``queries.jsonl``, ``qrels-<split>.tsv``) as well as BEIR's own (``corpus.jsonl``,
    ``queries.jsonl``, ``qrels/<split>.tsv``).

    Returns ``(corpus, queries, qrels)``: ``corpus`` maps doc id to :class:`Doc`;
    ``queries`` maps query id to text and holds only the queries that have judgments in
    this split (as BEIR's ``GenericDataLoader`` does); ``qrels`` maps query id to
    ``{doc id: label}``. Raises ``ValueError`` on a duplicate doc id or a judged query that
    has no text.
    """
    root = Path(data_dir)
    corpus_path = _first_existing(root / "corpus.jsonl.gz", root / "corpus.jsonl")
    corpus: dict[str, Doc] = {}
    for line in _read_lines(corpus_path):
        row = json.loads(line)
        doc_id = str(row["_id"])
        if doc_id in corpus:
            raise ValueError(f"{corpus_path}: duplicate doc id {doc_id!r}")
        corpus[doc_id] = Doc(title=str(row.get("title") or ""), text=str(row.get("text") or ""))
    queries, qrels = load_queries(root, split)
    return corpus, queries, qrels


# --------------------------------------------------------------------------- metrics


def _evaluated_queries(qrels: Qrels) -> list[str]:
    qids = [qid for qid, judged in qrels.items() if any(label > 0 for label in judged.values())]
    if not qids:
        raise ValueError("qrels has no query with a relevant (label > 0) judgment")
    return qids


def _unique_top_k(ranking: Iterable[str], k: int) -> list[str]:
    """The first ``k`` distinct doc ids, keeping each at its first position."""
    seen: set[str] = set()
    top: list[str] = []
    for doc_id in ranking:
        if doc_id in seen:
            continue
        seen.add(doc_id)
        top.append(doc_id)
        if len(top) == k:
            break
    return top


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _dcg(gains: Iterable[float]) -> float:
    # rank r (1-based) is discounted by log2(r + 1); enumerate() gives r - 1.
    return sum(gain / math.log2(i + 2) for i, gain in enumerate(gains))


def ndcg_at_k(ranked: Ranked, qrels: Qrels, k: int = 10) -> float:
    """Mean nDCG@k over the queries in ``qrels`` that have a relevant judgment.

    See the module docstring for the exact definition (linear graded gain, log2 discount,
    missing queries score 0).
    """
    _check_k(k)
    total = 0.0
    qids = _evaluated_queries(qrels)
    for qid in qids:
        judged = qrels[qid]
        top = _unique_top_k(ranked.get(qid, ()), k)
        dcg = _dcg(max(judged.get(doc_id, 0), 0) for doc_id in top)
        ideal = sorted((label for label in judged.values() if label > 0), reverse=True)[:k]
        total += dcg / _dcg(ideal)
    return total / len(qids)


def recall_at_k(ranked: Ranked, qrels: Qrels, k: int = 100) -> float:
    """Mean Recall@k over the queries in ``qrels`` that have a relevant judgment.

    Per query: ``|{label > 0} ∩ top-k| / |{label > 0}|``; missing queries score 0.
    """
    _check_k(k)
    total = 0.0
    qids = _evaluated_queries(qrels)
    for qid in qids:
        relevant = {doc_id for doc_id, label in qrels[qid].items() if label > 0}
        top = _unique_top_k(ranked.get(qid, ()), k)
        total += len(relevant.intersection(top)) / len(relevant)
    return total / len(qids)


# --------------------------------------------------------------------------- chunks -> docs


def dedupe_docs(chunk_hits: Iterable[tuple[str, float]]) -> list[str]:
    """Fold chunk hits into a document ranking (max-passage, "MaxP").

    ``chunk_hits`` are ``(doc_id, score)`` pairs, one per retrieved chunk, where ``doc_id``
    is the id of the document the chunk came from and a higher score is better. Each
    document takes the rank of its best-scoring chunk; the result lists every document
    once, best first. Equal scores keep their input order (the sort is stable), so a hit
    list that is already in rank order keeps that order on ties.

    >>> dedupe_docs([("d1", 0.5), ("d2", 0.9), ("d1", 0.8), ("d3", 0.1)])
    ['d2', 'd1', 'd3']
    """
    ordered = sorted(chunk_hits, key=lambda hit: hit[1], reverse=True)
    seen: set[str] = set()
    docs: list[str] = []
    for doc_id, _score in ordered:
        if doc_id not in seen:
            seen.add(doc_id)
            docs.append(doc_id)
    return docs
