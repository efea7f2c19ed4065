"""`python -m evaluation`: run the evaluation service."""

from evaluation.app import create_app
from evaluation.settings import EvaluationSettings
from llmops.service import run_service

settings = EvaluationSettings()
run_service("evaluation", settings, lambda: create_app(settings))
