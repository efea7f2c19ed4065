"""`python -m analytics`: run the analytics service."""

from analytics.app import create_app
from analytics.settings import AnalyticsSettings
from llmops.service import run_service

settings = AnalyticsSettings()
run_service("analytics", settings, lambda: create_app(settings))
