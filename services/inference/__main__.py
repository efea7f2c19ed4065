"""`python -m inference`: run the inference service."""

from inference.app import create_app
from inference.settings import InferenceSettings
from llmops.service import run_service

settings = InferenceSettings()
run_service("inference", settings, lambda: create_app(settings))
