"""The guardrails service: tenants' policies run over questions, passages, documents and answers."""
