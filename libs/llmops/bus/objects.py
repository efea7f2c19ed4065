"""Opening a JetStream object store bucket, creating it on first use."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.object_store import ObjectStore


async def open_object_store(
    js: JetStreamContext, bucket: str, description: str, replicas: int = 1
) -> ObjectStore:
    """The bucket, created on first use (file storage: its objects outlive restarts).

    Every service creates the platform's buckets at start-up with the configured
    replication (llmops.bus.topology); a client alone on a fresh NATS makes them R1."""
    try:
        return await js.object_store(bucket)
    except BucketNotFoundError:
        config = ObjectStoreConfig(
            description=description, storage=StorageType.FILE, replicas=replicas
        )
        return await js.create_object_store(bucket, config)
