"""Shared libraries of the llmops services: settings, logging, the NATS bus, gRPC and telemetry helpers."""
