"""The gateway: the public edge (gRPC Chat and an OpenAI-compatible HTTP API)."""
