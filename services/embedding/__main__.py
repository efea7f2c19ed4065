"""`python -m embedding`: run the embedding service."""

from embedding.app import create_app
from embedding.settings import EmbeddingSettings
from llmops.service import run_service

settings = EmbeddingSettings()
run_service("embedding", settings, lambda: create_app(settings))
