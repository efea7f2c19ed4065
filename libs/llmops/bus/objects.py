"""Opening a JetStream object store bucket, creating it on first use."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.object_store import ObjectStore


async def open_object_store(js: JetStreamContext, bucket: str, description: str) -> ObjectStore:
    """The bucket, created on first use (file storage: its objects outlive restarts)."""
    try:
        return await js.object_store(bucket)
    except BucketNotFoundError:
        return await js.create_object_store(
            bucket, description=description, storage=StorageType.FILE
        )
