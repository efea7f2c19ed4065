"""`python -m metering`: run the metering service."""

from llmops.service import run_service
from metering.app import create_app
from metering.settings import MeteringSettings

settings = MeteringSettings()
run_service("metering", settings, lambda: create_app(settings))
