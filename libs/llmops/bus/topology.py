"""Every subject, stream, consumer and KV bucket of the platform, declared in one place.

Streams are created (or updated) by `ensure_topology` at start-up by every
service, so the order processes start in does not matter. Publishers use
`Nats-Msg-Id` for de-duplication inside `DUPLICATE_WINDOW_S`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from llmops.bus.objects import open_object_store

# Subjects -------------------------------------------------------------------
DOCS_INGEST = "llmops.docs.ingest"
DOCS_DELETE = "llmops.docs.delete"
DOCS_CHUNKED = "llmops.docs.chunked"
DOCS_EMBEDDED = "llmops.docs.embedded"
EVENTS = "llmops.events"
DOCUMENT_EVENTS = f"{EVENTS}.document"  # .<status>
INTERACTION_EVENTS = f"{EVENTS}.interaction"  # one InteractionEvent per gateway request
USAGE_EVENTS = f"{EVENTS}.usage"  # one priced UsageEvent per request (metering)
GUARDRAIL_EVENTS = f"{EVENTS}.guardrail"  # GuardrailEvent: one guardrail's verdict
FEEDBACK_EVENTS = f"{EVENTS}.feedback"  # FeedbackEvent: a judgement of an answer
EVALUATION_EVENTS = f"{EVENTS}.evaluation"  # EvaluationEvent: an evaluator's score
BUDGET_EVENTS = f"{EVENTS}.budget"  # BudgetAlertEvent: a budget threshold crossed (metering)
EVAL_RUN_EVENTS = f"{EVENTS}.eval_run"  # EvalRunEvent: an offline run started or ended
DRIFT_EVENTS = f"{EVENTS}.drift"  # DriftEvent: one drift check's outcome (evaluation)
DLQ = "llmops.dlq"  # .<stage>
# .<stream>.<durable>.<original subject>: a replayed dead letter, for its one consumer only
REPLAY = "llmops.replay"


def dlq_subject(stage: str) -> str:
    return f"{DLQ}.{stage}"


def document_msg_id(subject: str, tenant: str, doc_id: str, version: int) -> str:
    """`Nats-Msg-Id` for one version of a document on one subject.

    The subject is part of it because JetStream de-duplicates per stream, and
    chunked and embedded documents share the pipeline stream.
    """
    return f"{subject}:{tenant}:{doc_id}:{version}"


# Streams --------------------------------------------------------------------
DUPLICATE_WINDOW_S = 600.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # must not exceed the server's max_payload


@dataclass(frozen=True)
class Stream:
    name: str
    subjects: tuple[str, ...]
    max_age_s: float  # 0 = forever
    description: str

    @property
    def replay_subjects(self) -> str:
        """Replayed dead letters of this stream's consumers (`Consumer.replay_subject`)."""
        return f"{REPLAY}.{self.name.lower()}.>"

    def config(self, replicas: int) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=[*self.subjects, self.replay_subjects],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self.max_age_s or None,
            max_msg_size=MAX_MESSAGE_BYTES,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=replicas,
        )


DOCS_IN_STREAM = Stream(
    "LLMOPS_DOCS_IN",
    (DOCS_INGEST, DOCS_DELETE),
    7 * 86400,
    "documents published for ingestion, and deletes",
)
PIPELINE_STREAM = Stream(
    "LLMOPS_PIPELINE",
    (DOCS_CHUNKED, DOCS_EMBEDDED),
    7 * 86400,
    "documents between the stages of the ingestion pipeline",
)
EVENTS_STREAM = Stream(
    "LLMOPS_EVENTS", (f"{EVENTS}.>",), 30 * 86400, "every event the platform emits"
)
DLQ_STREAM = Stream("LLMOPS_DLQ", (f"{DLQ}.>",), 0, "refused messages, kept until replayed")
STREAMS = (DOCS_IN_STREAM, PIPELINE_STREAM, EVENTS_STREAM, DLQ_STREAM)


# Consumers ------------------------------------------------------------------
@dataclass(frozen=True)
class Consumer:
    """A durable pull consumer with explicit acks; redelivery is bounded by the stage runner.

    JetStream's own `max_deliver` is left unbounded on purpose: when it runs out
    the server silently stops delivering, which would lose the message. The
    stage runner dead-letters after `max_deliver` attempts instead.
    """

    stream: Stream
    durable: str
    filter_subject: str
    max_ack_pending: int = 20_000
    # A redelivery delay shorter than LLMOPS_ACK_WAIT_S (a batch in hand is kept alive
    # by the stage's heartbeat, so a short one only hastens redelivery after a crash).
    ack_wait_s: float | None = None

    def redelivery_s(self, default_s: float) -> float:
        """Its redelivery delay: `default_s` (LLMOPS_ACK_WAIT_S), or its own if shorter."""
        return min(self.ack_wait_s or default_s, default_s)

    @property
    def replay_prefix(self) -> str:
        return f"{REPLAY}.{self.stream.name.lower()}.{self.durable}"

    def replay_subject(self, subject: str) -> str:
        """Where a dead letter this consumer took from `subject` is replayed: other
        consumers of the stream that filter on `subject` too never see it again."""
        return f"{self.replay_prefix}.{subject}"

    def config(self, ack_wait_s: float) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
            filter_subjects=[self.filter_subject, f"{self.replay_prefix}.>"],
        )


INGESTION_CONSUMER = Consumer(DOCS_IN_STREAM, "ingestion", "llmops.docs.*")
EMBEDDING_CONSUMER = Consumer(PIPELINE_STREAM, "embedding", DOCS_CHUNKED)
RETRIEVAL_CONSUMER = Consumer(PIPELINE_STREAM, "retrieval", DOCS_EMBEDDED)
# What a killed or frozen writer held comes back to its successor within seconds: the
# fault test once waited a minute (the default ack wait) for rows of answered requests.
ANALYTICS_CONSUMER = Consumer(EVENTS_STREAM, "analytics", f"{EVENTS}.>", ack_wait_s=10.0)
# Metering's counters remember the interactions they took above the ack floor: few,
# as no more than one batch may be unacked. What a crashed metering replica had taken
# comes back to another within seconds: until then gateways cannot see it in the spend.
METERING_BATCH = 256
METERING_CONSUMER = Consumer(
    EVENTS_STREAM, "metering", INTERACTION_EVENTS, max_ack_pending=METERING_BATCH, ack_wait_s=5.0
)
# Evaluation samples interactions to score online and watches their questions for drift.
EVALUATION_CONSUMER = Consumer(EVENTS_STREAM, "evaluation", INTERACTION_EVENTS)
# Ingestion keeps its document catalog (what is indexed, per tenant) from the outcomes.
CATALOG_CONSUMER = Consumer(EVENTS_STREAM, "catalog", f"{DOCUMENT_EVENTS}.>")

# KV buckets -----------------------------------------------------------------
DOCUMENT_REGISTRY_BUCKET = "llmops_documents"  # owned by ingestion: tenant.doc -> version, hash
API_KEYS_BUCKET = "llmops_api_keys"  # key id -> hashed API key record (llmops.apikeys)
TENANTS_BUCKET = "llmops_tenants"  # tenant -> its settings (llmops.apikeys)
RATE_LIMITS_BUCKET = "llmops_rate_limits"  # key id + window -> units taken (the gateway)
RESPONSE_CACHE_BUCKET = "llmops_response_cache"  # request digest -> cached answer (the gateway)
PRICES_BUCKET = "llmops_prices"  # "table" -> the price table, every version (llmops.pricing)
SPEND_BUCKET = "llmops_spend"  # tenant/key x day/month -> spend (metering writes, gateways read)
BUDGETS_BUCKET = "llmops_budgets"  # tenant or key -> its budget (llmops.spend)
GUARDRAIL_POLICIES_BUCKET = "llmops_guardrail_policies"  # tenant.name -> policy, every version
PROMPTS_BUCKET = "llmops_prompts"  # tenant.name.v<N> -> a version; tenant.name.labels -> labels
DATASETS_BUCKET = "llmops_datasets"  # object store: tenant/name/<digest> -> a golden dataset
UPLOADS_BUCKET = "llmops_uploads"  # object store: documents too large for a bus message
DOCUMENT_CATALOG_BUCKET = "llmops_doc_catalog"  # owned by ingestion: tenant.<doc hash> -> outcome
LEASES_BUCKET = "llmops_leases"  # work with one writer -> the replica holding it (llmops.lease)
LEASE_TTL_S = 10.0  # a lease nobody renews is gone this long after its last renewal
GUARDRAIL_POLICY_HISTORY = 64  # versions kept per policy (the most NATS KV keeps)
SPEND_MAX_AGE_S = 40 * 86400.0  # a month's counter outlives its month
RATE_LIMIT_WINDOW_MAX_AGE_S = 180.0  # per-minute windows; older ones are no longer read
RESPONSE_CACHE_MAX_AGE_S = 86400.0  # the longest exact-cache TTL a setting can ask for


@dataclass(frozen=True)
class Bucket:
    name: str
    description: str
    history: int = 1
    max_age_s: float = 0.0  # 0 = forever
    memory: bool = False

    def config(self, replicas: int) -> KeyValueConfig:
        return KeyValueConfig(
            bucket=self.name,
            description=self.description,
            history=self.history,
            ttl=self.max_age_s or None,
            storage=StorageType.MEMORY if self.memory else StorageType.FILE,
            replicas=replicas,
        )


BUCKETS = (
    Bucket(
        DOCUMENT_REGISTRY_BUCKET,
        "ingestion's registry: the current version and content hash per document",
    ),
    Bucket(API_KEYS_BUCKET, "API keys by id: tenant, limits and the key's SHA-256, never the key"),
    Bucket(TENANTS_BUCKET, "tenants and their settings"),
    Bucket(
        RATE_LIMITS_BUCKET,
        "per-key request and token counts per minute, shared by gateway replicas",
        max_age_s=RATE_LIMIT_WINDOW_MAX_AGE_S,
        memory=True,
    ),
    Bucket(
        RESPONSE_CACHE_BUCKET,
        "the gateway's exact response cache",
        max_age_s=RESPONSE_CACHE_MAX_AGE_S,
    ),
    Bucket(PRICES_BUCKET, "the price table with every version (never rewritten)", history=64),
    Bucket(
        SPEND_BUCKET,
        "spend per tenant and key, per UTC day and month (metering)",
        max_age_s=SPEND_MAX_AGE_S,
    ),
    Bucket(BUDGETS_BUCKET, "budgets per tenant and key"),
    Bucket(
        GUARDRAIL_POLICIES_BUCKET,
        "guardrail policies per tenant and name, with their history",
        history=GUARDRAIL_POLICY_HISTORY,
    ),
    Bucket(
        PROMPTS_BUCKET,
        "prompt templates: immutable versions and their labels (moves kept in the record)",
        history=GUARDRAIL_POLICY_HISTORY,
    ),
    Bucket(
        LEASES_BUCKET,
        "one writer among replicas: who holds each lease (renewed, or gone after its TTL)",
        max_age_s=LEASE_TTL_S,
    ),
    Bucket(
        DOCUMENT_CATALOG_BUCKET,
        "ingestion's document catalog: each document's latest outcome, sizes and last error",
    ),
)


# Object stores: name -> description.
OBJECT_BUCKETS = {
    UPLOADS_BUCKET: "documents too large for a bus message, until ingested",
    DATASETS_BUCKET: "golden datasets: tenant/name/version",
}


async def ensure_topology(js: JetStreamContext, replicas: int = 1) -> None:
    """Create or update every stream and bucket; safe to call from many processes at once."""
    for stream in STREAMS:
        cfg = stream.config(replicas)
        try:
            await js.stream_info(stream.name)
            await js.update_stream(cfg)
        except NotFoundError:
            try:
                await js.add_stream(cfg)
            except BadRequestError:  # another process created it meanwhile
                await js.update_stream(cfg)
    for bucket in BUCKETS:
        await js.create_key_value(bucket.config(replicas))
    for name, description in OBJECT_BUCKETS.items():
        with contextlib.suppress(BadRequestError):  # created by another process meanwhile
            await open_object_store(js, name, description, replicas)
