"""Inference service: model aliases routed to Triton or OpenAI-compatible APIs, streamed out."""

from __future__ import annotations

from inference.handlers import STAGE, InferenceServicer
from inference.settings import InferenceSettings
from llmops.routing.providers.defaults import default_providers
from llmops.routing.router import Loadout, Router
from llmops.service import ServiceApp
from llmops.v1 import inference_pb2, inference_pb2_grpc

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name


def create_app(settings: InferenceSettings) -> ServiceApp:
    app = ServiceApp(
        STAGE,
        settings,
        grpc_addr=settings.inference_addr,
        metrics_port=settings.inference_metrics_port,
        grpc_services=[SERVICE_NAME],
    )
    router = Router(default_providers(settings.triton_grpc_addr))

    async def load_the_routes() -> None:
        # A RoutesFileError (bad file, or a tokenizer it names that cannot load) stops start-up.
        router.load(Loadout.read(settings.routes_file, settings.models_dir))

    app.on_startup(load_the_routes)
    app.on_shutdown(router.close)
    app.add_grpc(
        lambda server: inference_pb2_grpc.add_InferenceServicer_to_server(
            InferenceServicer(router), server
        )
    )
    return app
