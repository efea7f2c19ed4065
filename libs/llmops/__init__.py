"""Shared libraries of the llmops services: settings, logging, NATS bus, gRPC, telemetry."""
