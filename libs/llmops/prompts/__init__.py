"""The prompt registry: versioned templates and labels in NATS KV (see docs/prompts.md)."""
