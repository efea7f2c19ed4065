"""Errors a gateway request ends with: each maps to one gRPC code and one HTTP status."""

from __future__ import annotations

import grpc

_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_OPENAI_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


class GatewayError(Exception):
    """A request failed for a reason the caller is told, with a status code for each API."""

    def __init__(
        self, code: grpc.StatusCode, message: str, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def http_status(self) -> int:
        return _HTTP.get(self.code, 500)

    @property
    def openai_type(self) -> str:
        return _OPENAI_TYPE.get(self.http_status, "api_error")


def from_rpc_error(upstream: str, exc: grpc.aio.AioRpcError) -> GatewayError:
    """An upstream service's failure, as the caller should see it."""
    return from_status(upstream, exc.code(), str(exc.details()))


def from_status(upstream: str, code: grpc.StatusCode, details: str) -> GatewayError:
    """An upstream's status (a gRPC call's, or the in-process router's), as the caller
    should see it."""
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
        return GatewayError(code, details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return GatewayError(code, f"{upstream} did not answer before the request's deadline")
    if code == grpc.StatusCode.CANCELLED:
        return GatewayError(code, f"{upstream} call was cancelled")
    return GatewayError(grpc.StatusCode.UNAVAILABLE, f"{upstream}: {code.name}: {details}")
