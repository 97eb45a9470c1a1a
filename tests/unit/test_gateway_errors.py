"""Error mapping, protojson output and header metadata of the gateway."""

from __future__ import annotations

import json

import grpc
import pytest
from envios.shipment.v1 import shipment_pb2
from envios.status.v1 import status_pb2 as envios_status_pb2
from envios.task.v1 import task_pb2
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from gateway.config import GatewayConfig
from gateway.errors import (
    HTTP_STATUS_BY_CODE,
    GatewayError,
    error_headers,
    http_status_from_code,
    status_from_rpc_error,
    status_json,
)
from gateway.marshal import dumps, message_to_value, response_value
from gateway.metadata import (
    accepts_trailers,
    parse_grpc_timeout,
    request_metadata,
    response_headers,
    trailer_fields,
)
from services.common.config import ConfigError

EXPECTED_HTTP = {
    0: 200,
    1: 499,
    2: 500,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 400,
    10: 409,
    11: 400,
    12: 501,
    13: 500,
    14: 503,
    15: 500,
    16: 401,
}


@pytest.mark.parametrize(("code", "http"), sorted(EXPECTED_HTTP.items()))
def test_errors_http_status_table(code: int, http: int):
    assert http_status_from_code(code) == http


def test_errors_table_covers_all_codes():
    assert set(HTTP_STATUS_BY_CODE) == set(range(17))
    assert http_status_from_code(99) == 500


class _FakeRpcError(grpc.RpcError):
    def __init__(
        self, code: grpc.StatusCode, details: str, trailer: tuple[tuple[str, bytes], ...]
    ) -> None:
        self._code = code
        self._details = details
        self._trailer = trailer

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailer


def _rich_status(code: int, message: str) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(
        reason="SHIPMENT_NOT_FOUND", domain="envios", metadata={"id": "s1"}
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=code, message=message, details=[detail])


def test_errors_status_details_from_trailer():
    rich = _rich_status(code_pb2.NOT_FOUND, "no shipment s1")
    error = _FakeRpcError(
        grpc.StatusCode.NOT_FOUND,
        "no shipment s1",
        (("grpc-status-details-bin", rich.SerializeToString()),),
    )

    body = status_json(status_from_rpc_error(error))

    assert body["code"] == 5
    assert body["message"] == "no shipment s1"
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert body["details"][0]["reason"] == "SHIPMENT_NOT_FOUND"
    assert body["details"][0]["metadata"] == {"id": "s1"}


def test_errors_without_trailer_empty_details():
    error = _FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused", ())

    body = status_json(status_from_rpc_error(error))

    assert body == {"code": 14, "message": "connection refused", "details": []}


def test_errors_mismatched_trailer_ignored():
    rich = _rich_status(code_pb2.NOT_FOUND, "other")
    error = _FakeRpcError(
        grpc.StatusCode.INTERNAL, "boom", (("grpc-status-details-bin", rich.SerializeToString()),)
    )

    status = status_from_rpc_error(error)

    assert status.code == code_pb2.INTERNAL
    assert list(status.details) == []


def test_errors_unknown_detail_type_dropped():
    unknown = any_pb2.Any(type_url="type.googleapis.com/nowhere.Unknown", value=b"\x08\x01")
    known = _rich_status(code_pb2.ABORTED, "etag").details[0]
    status = status_pb2.Status(code=code_pb2.ABORTED, message="etag", details=[unknown, known])

    body = status_json(status)

    assert [d["@type"] for d in body["details"]] == ["type.googleapis.com/google.rpc.ErrorInfo"]


def test_errors_www_authenticate_on_unauthenticated():
    status = status_pb2.Status(code=code_pb2.UNAUTHENTICATED, message='Bearer realm="envios"')

    assert error_headers(status) == [("www-authenticate", 'Bearer realm="envios"')]
    assert error_headers(status_pb2.Status(code=code_pb2.NOT_FOUND)) == []


def test_errors_gateway_error_override():
    error = GatewayError(code_pb2.RESOURCE_EXHAUSTED, "too big", http_status=413)

    assert error.status_code == 413
    assert GatewayError(code_pb2.RESOURCE_EXHAUSTED, "busy").status_code == 429


def test_marshal_zero_values_and_nulls():
    value = message_to_value(shipment_pb2.Shipment(id="s1"))

    assert value["id"] == "s1"
    assert value["status"] == ""
    assert value["trackingNumber"] == ""
    assert value["statusTimes"] == {}
    assert value["history"] == []
    assert value["statusTime"] is None
    assert value["createTime"] is None


def test_marshal_int64_enum_and_nested_nulls():
    overview = envios_status_pb2.Overview(tasks_in_flight=2**40, shipments_by_status={"shipped": 3})
    task_status = envios_status_pb2.TaskStatus(
        state=task_pb2.Task.RUNNING, results=[task_pb2.ShipmentResult(shipment_id="s1")]
    )

    overview_value = message_to_value(overview)
    task_value = message_to_value(task_status)

    assert overview_value["tasksInFlight"] == str(2**40)
    assert overview_value["shipmentsByStatus"] == {"shipped": "3"}
    assert overview_value["queueDepth"] == "0"
    assert task_value["state"] == "RUNNING"
    assert task_value["source"] == "SOURCE_UNSPECIFIED"
    assert task_value["results"][0]["error"] is None
    assert task_value["results"][0]["ok"] is False


def test_marshal_timestamp_string():
    shipment = shipment_pb2.Shipment(status_time=timestamp_pb2.Timestamp(seconds=1704067200))

    assert message_to_value(shipment)["statusTime"] == "2024-01-01T00:00:00Z"


def test_marshal_response_body_field():
    response = shipment_pb2.ListShipmentsResponse(
        shipments=[shipment_pb2.Shipment(id="a")], next_page_token="n"
    )

    value = response_value(response, "shipments")

    assert isinstance(value, list)
    assert value[0]["id"] == "a"
    assert response_value(response, "next_page_token") == "n"


def test_marshal_dumps_compact_utf8():
    assert dumps({"a": "ñ"}) == '{"a":"ñ"}'.encode()
    assert json.loads(dumps(message_to_value(shipment_pb2.Shipment())))["id"] == ""


@pytest.mark.parametrize(
    ("text", "seconds"), [("10S", 10.0), ("500m", 0.5), ("2M", 120.0), ("1H", 3600.0), ("7u", 7e-6)]
)
def test_metadata_grpc_timeout(text: str, seconds: float):
    assert parse_grpc_timeout(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "S", "10", "10s", "1.5S", "-1S"])
def test_metadata_grpc_timeout_invalid(text: str):
    with pytest.raises(GatewayError) as raised:
        parse_grpc_timeout(text)
    assert raised.value.code == code_pb2.INVALID_ARGUMENT


def test_metadata_request_headers():
    headers = [
        ("host", "api.example:8080"),
        ("authorization", "Bearer t"),
        ("user-agent", "curl/8"),
        ("grpc-metadata-tenant", "acme"),
        ("grpc-metadata-blob-bin", "AQI"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-custom", "dropped"),
    ]

    metadata = request_metadata(headers, "127.0.0.1")

    assert ("authorization", "Bearer t") in metadata
    assert ("grpcgateway-authorization", "Bearer t") in metadata
    assert ("grpcgateway-user-agent", "curl/8") in metadata
    assert ("tenant", "acme") in metadata
    assert ("blob-bin", b"\x01\x02") in metadata
    assert ("traceparent", headers[5][1]) in metadata
    assert ("x-forwarded-host", "api.example:8080") in metadata
    assert ("x-forwarded-for", "10.0.0.1, 127.0.0.1") in metadata
    assert all(key != "x-custom" for key, _ in metadata)


def test_metadata_bad_binary_header():
    with pytest.raises(GatewayError):
        request_metadata([("grpc-metadata-blob-bin", "!!!")], None)


def test_metadata_response_headers_and_trailers():
    headers = response_headers(
        [("etag", "e1"), ("raw-bin", b"\x00"), ("grpc-status-details-bin", b"x")]
    )
    trailers = trailer_fields([("checksum", "c1")])

    assert headers == [("grpc-metadata-etag", "e1"), ("grpc-metadata-raw-bin", "AA==")]
    assert trailers == [("grpc-trailer-checksum", "c1")]
    assert accepts_trailers([("te", "gzip, trailers")])
    assert not accepts_trailers([("te", "gzip")])


def test_config_from_env_defaults():
    config = GatewayConfig.from_env({"ENVIOS_LISTEN_ADDRESS": "127.0.0.1:8081"})

    assert config.port == 8081
    assert config.host == "127.0.0.1"
    assert config.max_concurrent_requests == 500
    assert config.max_body_bytes == 1024 * 1024
    assert config.upstream_grpc == "127.0.0.1:9090"


def test_config_from_env_reports_all_problems():
    with pytest.raises(ConfigError) as raised:
        GatewayConfig.from_env(
            {
                "ENVIOS_LISTEN_ADDRESS": "nowhere",
                "ENVIOS_MAX_CONCURRENT_REQUESTS": "0",
                "ENVIOS_MAX_BODY_BYTES": "big",
                "ENVIOS_LOG_LEVEL": "LOUD",
            }
        )
    assert len(raised.value.problems) == 4
