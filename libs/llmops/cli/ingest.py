"""`llmops ingest`: publish files and folders to `llmops.docs.ingest`, optionally wait."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from llmops.bus.events import status_name
from llmops.docclient import DocumentClient, document_for_file
from llmops.ids import refusals
from llmops.v1 import events_pb2

# The extensions ingestion's format detection knows (ingestion.formats, which
# libs cannot import); a folder walk sends only these.
SUPPORTED = {
    ".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf",
    ".docx", ".pptx", ".xlsx", ".csv", ".json", ".eml",
}  # fmt: skip


def collect(paths: list[Path]) -> list[Path]:
    """Files named explicitly are always sent; folders contribute their supported files."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED
            )
        else:
            files.append(path)
    return files


def doc_id_for(path: Path) -> str:
    """Stable ids: the path relative to the current folder when inside it, else absolute."""
    rel = os.path.relpath(path.resolve())
    return Path(rel).as_posix() if not rel.startswith("..") else path.resolve().as_posix()


def _too_large(path: Path, max_bytes: int) -> dict[str, str]:
    size = path.stat().st_size
    if size <= max_bytes:
        return {}
    return {"size": f"{size} bytes; the limit is {max_bytes} (LLMOPS_MAX_DOCUMENT_BYTES)"}


@dataclass(frozen=True)
class IngestOptions:
    tenant: str
    collection: str
    metadata: dict[str, str]
    wait: bool
    timeout_s: float
    max_bytes: int  # LLMOPS_MAX_DOCUMENT_BYTES: refused here, before anything is uploaded
    keep_upload: bool = False


async def run_ingest(nats_url: str, paths: list[Path], options: IngestOptions) -> int:
    o = options
    console = Console(stderr=True)
    files = collect(paths)
    if not files:
        console.print("no supported files found (" + ", ".join(sorted(SUPPORTED)) + ")")
        return 1
    refused = {
        str(path): reasons
        for path in files
        if (
            reasons := refusals(
                tenant=o.tenant, doc_id=doc_id_for(path), collection=o.collection or "default"
            )
            | _too_large(path, o.max_bytes)
        )
    }
    if refused:  # said here, before anything is published, not by a dead letter later
        for name, reasons in refused.items():  # plain lines: never wrapped
            sys.stderr.write(f"{name}: " + "; ".join(reasons.values()) + "\n")
        return 2
    client = await DocumentClient.connect(nats_url)
    try:
        if o.wait:
            await client.watch()
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("published", total=len(files))
            for path in files:
                doc = document_for_file(path, doc_id_for(path), o.tenant, o.collection, o.metadata)
                await client.publish(doc, file=path, keep=o.keep_upload)
                progress.advance(task)
            if not o.wait:
                return 0
            done = progress.add_task("searchable", total=len(files))
            outcomes = await client.wait_for(
                [(o.tenant, doc_id_for(p)) for p in files],
                o.timeout_s,
                on_outcome=lambda _: progress.advance(done),
            )
    except TimeoutError as exc:
        console.print(f"[red]timed out: {exc}[/red]")
        return 2
    finally:
        await client.close()
    failed = [e for e in outcomes.values() if e.status == events_pb2.DOCUMENT_STATUS_FAILED]
    counts: dict[str, int] = {}
    for event in outcomes.values():
        counts[status_name(event.status)] = counts.get(status_name(event.status), 0) + 1
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for event in failed:
        console.print(f"[red]failed[/red] {event.doc_id}: {event.reason} (stage {event.stage})")
    return 1 if failed else 0
