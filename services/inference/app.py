"""Inference service: model aliases routed to Triton or OpenAI-compatible APIs, streamed out."""

from __future__ import annotations

from inference.handlers import STAGE, InferenceServicer, Loadout
from inference.providers import Provider
from inference.providers.openai import OpenAIProvider
from inference.providers.triton import TritonProvider
from inference.routing import load_routes
from inference.settings import InferenceSettings
from inference.usage import load_counters
from llmops.logging import get_logger
from llmops.service import Loaded, ServiceApp
from llmops.v1 import inference_pb2, inference_pb2_grpc

log = get_logger(__name__)
SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name


def create_app(settings: InferenceSettings) -> ServiceApp:
    app = ServiceApp(
        STAGE,
        settings,
        grpc_addr=settings.inference_addr,
        metrics_port=settings.inference_metrics_port,
        grpc_services=[SERVICE_NAME],
    )
    loaded: Loaded[Loadout] = Loaded("the routes file")
    # Providers connect lazily, per request: an upstream down at start-up is not an error.
    providers: dict[str, Provider] = {
        "triton": TritonProvider(settings.triton_grpc_addr),
        "openai": OpenAIProvider(),
    }
    servicer = InferenceServicer(loaded, providers)

    async def load_the_routes() -> None:
        # A RoutesFileError (bad file, or a tokenizer it names that cannot load) stops start-up.
        routes = load_routes(settings.routes_file)
        counters = load_counters(routes, settings.models_dir)
        loaded.set(Loadout(routes, counters))
        log.info(
            "routes.loaded",
            file=str(settings.routes_file),
            default=routes.default,
            aliases={alias: [t.name for t in ts] for alias, ts in routes.aliases.items()},
            tokenizers=sorted(counters),
        )

    async def close_the_providers() -> None:
        for provider in providers.values():
            await provider.close()

    app.on_startup(load_the_routes)
    app.on_shutdown(close_the_providers)
    app.add_grpc(
        lambda server: inference_pb2_grpc.add_InferenceServicer_to_server(servicer, server)
    )
    return app
