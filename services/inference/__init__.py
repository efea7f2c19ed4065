"""Inference service: routes a model alias to its targets (Triton today) and streams the answer."""
