"""Reading a NATS KV bucket's entries exactly, through a pull consumer.

Stores that write by compare-and-set (guardrail policies, prompts) read this
way, not with nats-py's KV watch: a watch can signal "that was all" before
entries the server already pushed have been handled (seen under load), and a
compare-and-set must see a key's last revision, a history all its versions.
The consumer knows how many entries to expect, so nothing is missed.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

DELETED = ("DEL", "PURGE")  # KV-Operation values of a tombstone
_FETCH = 256


async def kv_entries(
    js: JetStreamContext, bucket: str, keys: str, *, last_only: bool
) -> list[KeyValue.Entry]:
    """The entries of the keys matching `keys` (a KV key filter such as `t.*` or `>`):
    every one kept, or each key's last, in stream order (tombstones included)."""
    prefix = f"$KV.{bucket}."
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT if last_only else DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
    )
    sub = await js.pull_subscribe(prefix + keys, stream=f"KV_{bucket}", config=config)
    entries: list[KeyValue.Entry] = []
    try:
        pending = (await sub.consumer_info()).num_pending or 0
        while pending > 0:
            for msg in await sub.fetch(min(pending, _FETCH), timeout=5):
                meta = msg.metadata
                pending = meta.num_pending or 0
                entries.append(
                    KeyValue.Entry(
                        bucket=bucket,
                        key=msg.subject.removeprefix(prefix),
                        value=msg.data,
                        revision=meta.sequence.stream,
                        delta=meta.num_pending,
                        created=None,
                        operation=(msg.headers or {}).get("KV-Operation"),
                    )
                )
    finally:
        await sub.unsubscribe()
    return entries
