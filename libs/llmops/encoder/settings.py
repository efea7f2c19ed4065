"""The encoder setting shared by every process that embeds with the platform's model.

Documents are embedded by the embedding service and queries by retrieval, in its own
process: both must load the same exported variant, or a query's cosine to a document
compares two different models. So the variant is one field, inherited by both
services' settings and read from one `LLMOPS_EMBEDDING_VARIANT`.
"""

from __future__ import annotations

from pydantic import Field

from llmops.encoder.manifest import Variant
from llmops.settings import CommonSettings


class EncoderSettings(CommonSettings):
    embedding_variant: Variant = Field(
        "int8", description="int8: 2x faster on CPU, same retrieval quality (DESIGN.md)"
    )
