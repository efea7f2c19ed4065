"""Triton Inference Server as a local process: unpack it from the nvidia-pytriton wheel, run it."""

from llmops.triton.model_env import install_model_env
from llmops.triton.runtime import (
    EXIT_TIMEOUT_S,
    TritonRuntime,
    TritonStartError,
    install_runtime,
    wait_ready,
)

__all__ = [
    "EXIT_TIMEOUT_S",
    "TritonRuntime",
    "TritonStartError",
    "install_model_env",
    "install_runtime",
    "wait_ready",
]
