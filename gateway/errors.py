"""gRPC status to HTTP: status codes and ``google.rpc.Status`` JSON bodies.

The HTTP status comes from grpc-gateway v2's ``HTTPStatusFromCode`` table. The body is the
``google.rpc.Status`` in protojson: ``{"code": 5, "message": "...", "details": [...]}``,
each detail an ``Any`` printed with its ``@type``. Details come from the
``grpc-status-details-bin`` trailer when the upstream sent one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2

from gateway.marshal import MarshalError, message_to_value

logger = logging.getLogger(__name__)

# Importing the module registers ErrorInfo, BadRequest and the other standard detail
# types in the default descriptor pool, so their Any values print as JSON.
STANDARD_DETAIL_TYPES = error_details_pb2.DESCRIPTOR

STATUS_DETAILS_KEY = "grpc-status-details-bin"

HTTP_STATUS_BY_CODE: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    # FAILED_PRECONDITION is 400 on purpose, not 412 Precondition Failed (HTTP conditional
    # requests): grpc-gateway maps it the same way.
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
}
"""grpc-gateway v2 ``HTTPStatusFromCode``; a code outside the table maps to 500."""


def http_status_from_code(code: int) -> int:
    """Return the HTTP status for a gRPC status code number."""
    return HTTP_STATUS_BY_CODE.get(code, 500)


@dataclass
class GatewayError(Exception):
    """An error the gateway returns without calling a service, as a ``google.rpc.Status``.

    ``http_status`` overrides the table, like grpc-gateway's ``HTTPStatusError``.
    """

    code: int
    message: str
    http_status: int | None = None
    details: list[Any] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message

    def to_status(self) -> status_pb2.Status:
        status = status_pb2.Status(code=self.code, message=self.message)
        status.details.extend(self.details)
        return status

    @property
    def status_code(self) -> int:
        return self.http_status or http_status_from_code(self.code)


def status_from_rpc_error(error: grpc.RpcError) -> status_pb2.Status:
    """Return the status of a failed call, with details from its trailer when present.

    A trailer that does not parse, or that disagrees with the call's code, is ignored
    and the status keeps the call's code and message without details.
    """
    code = _code_number(error)
    message = str(error.details() or "")
    trailer = error.trailing_metadata() or ()
    for key, value in trailer:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            rich = _parse_status(value)
            if rich is not None and rich.code == code:
                return rich
            logger.warning("ignored a %s trailer that does not match status code %s", key, code)
    return status_pb2.Status(code=code, message=message)


def _code_number(error: grpc.RpcError) -> int:
    code = error.code()
    if isinstance(code, grpc.StatusCode):
        return int(code.value[0])
    return int(code_pb2.UNKNOWN)


def _parse_status(data: bytes) -> status_pb2.Status | None:
    status = status_pb2.Status()
    try:
        status.ParseFromString(data)
    except DecodeError:
        return None
    return status


def status_json(
    status: status_pb2.Status, pool: descriptor_pool.DescriptorPool | None = None
) -> Any:
    """Return the JSON value of a status, dropping details whose type is unknown here.

    ``pool`` (the rpc's pool) and then the default pool resolve the detail types.
    grpc-gateway fails the whole body when a detail type is unknown; keeping code and
    message is more useful, and the log line names the dropped type.
    """
    details = []
    for detail in status.details:
        try:
            details.append(message_to_value(detail, pool))
        except MarshalError:
            logger.warning("dropped error detail of unknown type %s", detail.type_url)
    return {"code": status.code, "message": status.message, "details": details}


def error_headers(status: status_pb2.Status) -> list[tuple[str, str]]:
    """Extra response headers for an error: ``WWW-Authenticate`` on UNAUTHENTICATED."""
    if status.code == code_pb2.UNAUTHENTICATED:
        # grpc-gateway puts the status message there as it is.
        return [("www-authenticate", _header_safe(status.message))]
    return []


def _header_safe(text: str) -> str:
    return "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in text)


def invalid_argument(message: str) -> GatewayError:
    return GatewayError(code_pb2.INVALID_ARGUMENT, message)
