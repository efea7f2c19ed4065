"""The `llmops` CLI against the running platform."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from tests.conftest import MAX_DOCUMENT_BYTES
from tests.support import Platform


def test_status_reports_every_component_ready(platform: Platform) -> None:
    result = platform.cli("status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ready"] is True
    assert set(report["components"]) == {
        "nats",
        "triton",
        "ingestion",
        "embedding",
        "retrieval",
        "inference",
        "gateway",
        "analytics",
        "metering",
        "guardrails",
        "evaluation",
    }
    assert all(c["ready"] and c["pid"] for c in report["components"].values())


def test_ingest_wait_then_search(platform: Platform, sample_dir: Path) -> None:
    tenant = f"cli-{uuid.uuid4().hex[:6]}"
    result = platform.cli("ingest", str(sample_dir), "--tenant", tenant, "--wait")
    assert result.returncode == 0, result.stderr
    assert "3 indexed" in result.stderr
    query = "how long does the defrost cycle of the heat pump last"
    found = platform.cli("search", query, "--tenant", tenant, "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert "two to six minutes" in hits[0]["text"]
    assert hits[0]["source"].endswith("aurora-heat-pump.txt")
    table = platform.cli("search", "bike chain oil", "--tenant", tenant, "-k", "2")
    assert "500 kilometres" in table.stdout
    again = platform.cli("ingest", str(sample_dir), "--tenant", tenant, "--wait")
    assert "3 unchanged" in again.stderr


def test_ingest_wait_fails_when_a_document_is_dead_lettered(
    platform: Platform, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 truncated garbage")
    result = platform.cli("ingest", str(broken), "--tenant", "cli-bad", "--wait")
    assert result.returncode == 1
    assert "failed" in result.stderr and "broken.pdf" in result.stderr


def test_search_reports_a_clear_error_for_an_empty_query(platform: Platform) -> None:
    result = platform.cli("search", "   ")
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stdout + result.stderr


def test_ingest_refuses_a_bad_tenant_before_publishing(platform: Platform, tmp_path: Path) -> None:
    doc = tmp_path / "note.md"
    doc.write_text("# Note\n\nA note.\n")
    result = platform.cli("ingest", str(doc), "--tenant", "../../etc")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "invalid tenant '../../etc'" in result.stderr


def test_ingest_refuses_a_file_over_the_limit_before_uploading(
    platform: Platform, tmp_path: Path
) -> None:
    """The platform runs with LLMOPS_MAX_DOCUMENT_BYTES=1,000,000 (tests/conftest.py)."""
    doc = tmp_path / "huge.txt"
    doc.write_bytes(b"x" * (MAX_DOCUMENT_BYTES + 1))
    result = platform.cli("ingest", str(doc), "--tenant", "cli-huge", "--wait", "--timeout", "5")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{MAX_DOCUMENT_BYTES + 1} bytes; the limit is {MAX_DOCUMENT_BYTES}" in result.stderr
    assert "LLMOPS_MAX_DOCUMENT_BYTES" in result.stderr


def test_up_says_how_long_the_platform_and_each_component_took(platform: Platform) -> None:
    log = platform.log()
    assert re.search(r"llmops is up in \d+\.\d s", log), log[-2000:]
    for name in ("NATS", "Triton", "gateway", "ingestion", "embedding"):
        line = next(x for x in log.splitlines() if x.split("| ", 1)[-1].strip().startswith(name))
        assert re.search(r"ready in \d+\.\d s\)", line), line
