"""Policy lint of the rendered overlays with checkov's Kubernetes checks.

checkov pins many packages of its own, so `make setup` installs it into a venv of
its own (.cache/checkov), not .venv. Each overlay is rendered (tests/deploy/kustomize.py)
to a file and checked once; every finding must be covered by an entry of
deploy/k8s/checkov-skips.yaml, which says why it is kept, and every entry must still
cover a finding, so the list cannot outlive its reasons.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kustomize import build
from tests.deploy.test_manifests import CHECKOV_SKIPS, K8S, OVERLAYS, ROOT

CHECKOV_VENV = ROOT / ".cache" / "checkov"
CHECKOV = CHECKOV_VENV / "bin" / "checkov"
# Failed checks only, as one JSON document; no download of policies from a platform.
CHECKOV_ARGS = ("--quiet", "--compact", "--output", "json", "--skip-download")


@dataclass(frozen=True)
class Finding:
    check: str
    title: str
    resource: str  # Kind/name (checkov's Kind.namespace.name without the namespace)

    def __str__(self) -> str:
        return f"{self.check} ({self.title}): {self.resource}"


@cache
def findings(overlay: str) -> tuple[Finding, ...]:
    """checkov's failed checks on the rendered overlay (one run per overlay per session)."""
    assert CHECKOV.is_file(), f"{CHECKOV} is missing: `make setup` installs it"
    objs = build(K8S / "overlays" / overlay)
    with tempfile.TemporaryDirectory() as tmp:
        rendered = Path(tmp, f"{overlay}.yaml")
        rendered.write_text(yaml.safe_dump_all(objs, sort_keys=False))
        # cwd: a directory with no .checkov.yaml, so only these arguments configure it.
        result = subprocess.run(
            [CHECKOV, "--file", rendered, "--framework", "kubernetes", *CHECKOV_ARGS],
            cwd=tmp,
            env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 1: findings
    report: dict[str, Any] = json.loads(result.stdout)
    summary = report["summary"]
    assert summary["parsing_errors"] == 0, summary
    assert summary["resource_count"] >= len(objs), f"checkov read only part of it: {summary}"
    out = []
    for failed in report["results"]["failed_checks"]:
        kind, _, rest = failed["resource"].partition(".")
        namespace, _, name = rest.partition(".")
        out.append(Finding(failed["check_id"], failed["check_name"], f"{kind}/{name or namespace}"))
    return tuple(out)


@cache
def skips() -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = yaml.safe_load(CHECKOV_SKIPS.read_text())
    return entries


def covers(entry: dict[str, Any], overlay: str, finding: Finding) -> bool:
    return overlay in entry.get("overlays", OVERLAYS) and finding.resource in entry.get(
        "resources", [finding.resource]
    )


def test_checkov_is_installed_at_the_makefile_pin() -> None:
    pin = re.search(r"checkov==([\d.]+)", (ROOT / "Makefile").read_text())
    assert pin, "the Makefile installs a pinned checkov"
    [site] = CHECKOV_VENV.glob("lib/python*/site-packages")
    [dist] = metadata.distributions(name="checkov", path=[str(site)])
    assert dist.version == pin[1], "stale .cache/checkov: run `make setup`"


def test_every_skip_names_a_check_and_says_why() -> None:
    for check, entry in skips().items():
        assert re.fullmatch(r"CKV2?_K8S_\d+", check), check
        assert set(entry) <= {"reason", "overlays", "resources"}, check
        assert len(entry.get("reason", "")) > 40, f"{check}: give the reason"
        assert set(entry.get("overlays", OVERLAYS)) <= set(OVERLAYS), check
        for resource in entry.get("resources", []):
            assert re.fullmatch(r"[A-Za-z]+/[a-z0-9-]+", resource), f"{check}: {resource}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_checkov(overlay: str) -> None:
    unexplained = [
        str(f)
        for f in findings(overlay)
        if not (f.check in skips() and covers(skips()[f.check], overlay, f))
    ]
    assert not unexplained, (
        f"{overlay}: checkov findings to fix, or to justify in {CHECKOV_SKIPS.name}:\n  "
        + "\n  ".join(unexplained)
    )


def test_every_skip_still_covers_a_finding() -> None:
    for check, entry in skips().items():
        for overlay in entry.get("overlays", OVERLAYS):
            hits = {f.resource for f in findings(overlay) if f.check == check}
            assert hits, f"{check} passes in {overlay} now: narrow or drop its entry"
            missing = set(entry.get("resources", [])) - hits
            assert not missing, f"{check} passes on {sorted(missing)} in {overlay} now"
