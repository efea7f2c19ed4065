"""`python -m retrieval`: run the retrieval service."""

from llmops.service import run_service
from retrieval.app import create_app
from retrieval.settings import RetrievalSettings

settings = RetrievalSettings()
run_service("retrieval", settings, lambda: create_app(settings))
