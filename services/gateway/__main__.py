"""`python -m gateway`: run the gateway service."""

from gateway.app import create_app
from gateway.settings import GatewaySettings
from llmops.service import run_service

settings = GatewaySettings()
run_service("gateway", settings, lambda: create_app(settings))
