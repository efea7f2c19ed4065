"""`python -m ingestion`: run the ingestion service."""

from ingestion.app import create_app
from ingestion.settings import IngestionSettings
from llmops.service import run_service

settings = IngestionSettings()
run_service("ingestion", settings, lambda: create_app(settings))
