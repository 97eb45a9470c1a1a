"""Mapping of domain errors to rich gRPC statuses."""

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common.errors import (
    DOMAIN,
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    to_status,
)


def unpack(status: grpc.Status) -> list[object]:
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    proto = rpc_status.status_pb2.Status.FromString(details)
    unpacked: list[object] = []
    for item in proto.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if item.Is(kind.DESCRIPTOR):
                message = kind()
                item.Unpack(message)
                unpacked.append(message)
    return unpacked


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (Aborted("x"), grpc.StatusCode.ABORTED),
        (Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (InvalidArgument([("f", "bad")]), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_codes(error: DomainError, code: grpc.StatusCode) -> None:
    status = to_status(error)
    assert status.code == code
    info = unpack(status)[0]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.domain == DOMAIN
    assert info.reason == error.reason


def test_metadata_and_reason_carried() -> None:
    error = FailedPrecondition(
        "no", reason="INVALID_TRANSITION", metadata={"current_status": "shipped"}
    )
    info = unpack(to_status(error))[0]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "INVALID_TRANSITION"
    assert info.metadata["current_status"] == "shipped"


def test_invalid_argument_has_field_violations() -> None:
    status = to_status(
        InvalidArgument([("shipment.status", "unknown"), ("request_id", "too long")])
    )
    bad_request = unpack(status)[1]
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["shipment.status", "request_id"]
    assert "shipment.status: unknown" in status.details
