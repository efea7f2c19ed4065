"""What can go wrong between a Generate request and a target's stream."""

from __future__ import annotations


class RoutesFileError(Exception):
    """The routes file is missing, not YAML, or does not match the schema."""


class TargetError(Exception):
    """A target did not answer: unreachable, model not ready, too slow, or it sent an error.

    Before the target streamed anything the next target is tried; after, it is
    too late to fall back and the call fails.
    """
