"""Why the embedding model cannot be used.

A model problem is an operator problem, not a request problem: the files under
the model directory are missing, incomplete or damaged, and the fix is always
the same (re-export them), so the message says so instead of leaking an ONNX
Runtime or tokenizer traceback.
"""

from __future__ import annotations

SETUP_HINT = "run `make setup` (or `python -m embedding.export_model --out <dir> --force`)"


class EmbeddingModelError(Exception):
    """The exported model at a directory is missing, incomplete or corrupt."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"{detail}; {SETUP_HINT}")
        self.detail = detail
