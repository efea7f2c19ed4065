"""What can go wrong between a Generate request and a target's stream."""

from __future__ import annotations

import grpc


class RoutesFileError(Exception):
    """The routes file is missing, not YAML, or does not match the schema."""


class TargetError(Exception):
    """A target did not answer: unreachable, model not ready, too slow, or it sent an error.

    Before the target streamed anything the next target is tried; after, it is
    too late to fall back and the call fails.
    """


class RouteError(Exception):
    """Generate failed as a whole, with the gRPC status either form reports: INVALID_ARGUMENT,
    NOT_FOUND (unknown alias), UNAVAILABLE (no target answered), DEADLINE_EXCEEDED."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
