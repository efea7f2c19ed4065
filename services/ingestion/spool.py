"""Where uploads are streamed to disk before parsing: one folder per ingestion process.

The folder is named after the process id, so a process that starts removes the
folders of processes that are gone (a kill -9 mid-download leaves its spool
behind) without touching those of replicas that share the disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from llmops.processes import process_alive

_PREFIX = "llmops-spool-"


class Spool:
    def __init__(self, base: Path | None) -> None:
        self._base = base or Path(tempfile.gettempdir())
        self.folder = self._base / f"{_PREFIX}{os.getpid()}"

    def start(self) -> None:
        self._base.mkdir(parents=True, exist_ok=True)
        for stale in self._base.glob(f"{_PREFIX}*"):
            pid = stale.name.removeprefix(_PREFIX)
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        self.folder.mkdir(exist_ok=True)

    def stop(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    @contextlib.contextmanager
    def file(self) -> Iterator[Path]:
        """A fresh path in the spool, removed afterwards whatever happens."""
        fd, name = tempfile.mkstemp(dir=self.folder, prefix="upload-")
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)
