"""The ingestion service: documents in, cleaned, versioned, token-aware chunks out."""
