"""Retrieval service: owns Qdrant; indexes embedded documents and answers hybrid search."""
