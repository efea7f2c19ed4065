"""Embedding service: turns chunks and queries into dense vectors with an ONNX model."""
