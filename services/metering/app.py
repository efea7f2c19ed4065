"""Metering service: interactions priced into usage events, spend counters and budget alerts."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from llmops.apikeys import KeyDirectory
from llmops.bus.topology import BUDGETS_BUCKET, METERING_BATCH, METERING_CONSUMER, SPEND_BUCKET
from llmops.kvmirror import model_mirror
from llmops.pricebook import PriceBook, seed_prices
from llmops.service import Loaded, ServiceApp
from llmops.spend import Budget
from llmops.v1 import metering_pb2, metering_pb2_grpc
from metering.grpc_api import MeteringServicer
from metering.meter import Meter
from metering.settings import MeteringSettings

STAGE = "metering"
SERVICE_NAME = metering_pb2.DESCRIPTOR.services_by_name["Metering"].full_name


def create_app(settings: MeteringSettings) -> ServiceApp:
    app = ServiceApp(
        STAGE,
        settings,
        grpc_addr=settings.metering_addr,
        metrics_port=settings.metering_metrics_port,
        grpc_services=[SERVICE_NAME],
    )
    js: Loaded[JetStreamContext] = Loaded("NATS")
    spend: Loaded[KeyValue] = Loaded("the spend bucket")
    prices = PriceBook()
    budgets = model_mirror(BUDGETS_BUCKET, Budget)
    keys = KeyDirectory()
    meter = Meter(js, spend, prices, budgets)

    async def load() -> None:
        js.set(app.js)
        await seed_prices(app.js, settings.prices_file)  # PriceError stops start-up
        spend.set(await app.js.key_value(SPEND_BUCKET))
        await prices.start(app.js)
        await budgets.start(app.js)
        await keys.start(app.js)

    async def close() -> None:
        await prices.stop()
        await budgets.stop()
        await keys.stop()

    app.on_startup(load)
    app.on_shutdown(close)
    app.add_stage(METERING_CONSUMER, meter.handle, batch_size=METERING_BATCH)
    app.add_grpc(
        lambda server: metering_pb2_grpc.add_MeteringServicer_to_server(
            MeteringServicer(keys, spend, budgets), server
        )
    )
    return app
