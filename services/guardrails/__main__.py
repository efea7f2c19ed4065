"""`python -m guardrails`: run the guardrails service."""

from guardrails.app import create_app
from guardrails.settings import GuardrailsSettings
from llmops.service import run_service

settings = GuardrailsSettings()
run_service("guardrails", settings, lambda: create_app(settings))
