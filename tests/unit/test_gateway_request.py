"""Request building of the gateway: body, path variables, query parameters, field masks."""

from __future__ import annotations

from typing import TypeVar

import pytest
from envios.shipment.v1 import shipment_pb2
from envios.status.v1 import status_pb2
from envios.task.v1 import task_pb2
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2, wrappers_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from gateway.bindings import Binding, load_bindings
from gateway.fieldmask import FieldMaskError, field_mask_paths
from gateway.fields import (
    FieldValueError,
    descriptor_of,
    parse_message,
    resolve_field_path,
    set_field,
)
from gateway.request import RequestError, build_request

M = TypeVar("M", bound=Message)


def _build(binding: Binding, body: bytes, path: dict[str, str], query: str, kind: type[M]) -> M:
    request = build_request(binding, body, path, query)
    assert isinstance(request, kind)
    return request


def _binding(method: str, template: str) -> Binding:
    for binding in load_bindings():
        if binding.http_method == method and binding.template.source == template:
            return binding
    raise LookupError(template)


def test_body_field_create():
    binding = _binding("POST", "/v1/shipments")

    request = _build(
        binding,
        b'{"id": "s1", "trackingNumber": "TN", "status_time": "2024-05-01T10:00:00Z"}',
        {},
        "request_id=r1",
        shipment_pb2.CreateShipmentRequest,
    )

    assert request.shipment.id == "s1"
    assert request.shipment.tracking_number == "TN"
    assert request.shipment.status_time.seconds == 1714557600
    assert request.request_id == "r1"


def test_body_field_ignores_query_under_body():
    binding = _binding("POST", "/v1/shipments")

    request = _build(
        binding,
        b'{"id": "s1"}',
        {},
        "shipment.id=other&shipment.status=x",
        shipment_pb2.CreateShipmentRequest,
    )

    assert request.shipment.id == "s1"
    assert request.shipment.status == ""


def test_body_unknown_field_discarded():
    binding = _binding("POST", "/v1/shipments")

    request = _build(
        binding, b'{"id": "s1", "colour": "red"}', {}, "", shipment_pb2.CreateShipmentRequest
    )

    assert request.shipment.id == "s1"


def test_body_star_with_path_and_no_query():
    binding = _binding("POST", "/v1/tasks/{id}:cancel")

    request = _build(
        binding, b'{"id": "from-body"}', {"id": "t1"}, "id=from-query", task_pb2.CancelTaskRequest
    )

    assert request.id == "t1"


def test_body_empty_allowed():
    binding = _binding("POST", "/v1/tasks/{id}:cancel")

    request = _build(binding, b"", {"id": "t1"}, "", task_pb2.CancelTaskRequest)

    assert request.id == "t1"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"id": ', "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"id": "a", "id": "b"}', "twice"),
        (b'{"workDuration": NaN}', "NaN"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_body_malformed_rejected(body: bytes, expected: str):
    binding = _binding("POST", "/v1/tasks/{id}:cancel")

    with pytest.raises(RequestError, match=expected):
        build_request(binding, body, {"id": "t1"}, "")


def test_body_wrong_type_names_field():
    binding = _binding("POST", "/v1/tasks")

    with pytest.raises(RequestError, match="workDuration"):
        build_request(binding, b'{"type": "transition", "workDuration": 5}', {}, "")


def test_body_field_must_be_object():
    binding = _binding("POST", "/v1/tasks")

    with pytest.raises(RequestError, match=r"expected a JSON object for envios\.task\.v1\.Task"):
        build_request(binding, b'["transition"]', {}, "")


def test_patch_derives_update_mask():
    binding = _binding("PATCH", "/v1/shipments/{shipment.id}")

    request = _build(
        binding,
        b'{"substatus": "printed", "status": "handling"}',
        {"shipment.id": "s1"},
        "",
        shipment_pb2.UpdateShipmentRequest,
    )

    assert request.shipment.id == "s1"
    assert list(request.update_mask.paths) == ["status", "substatus"]


def test_patch_query_mask_overrides_derived():
    binding = _binding("PATCH", "/shippings/{shipment.id}")

    request = _build(
        binding,
        b'{"status": "handling", "etag": "e1"}',
        {"shipment.id": "s1"},
        "update_mask=status",
        shipment_pb2.UpdateShipmentRequest,
    )

    assert list(request.update_mask.paths) == ["status"]


def test_patch_unknown_key_rejected():
    binding = _binding("PATCH", "/shippings/{shipment.id}")

    with pytest.raises(RequestError, match="could not find field 'colour'"):
        build_request(binding, b'{"colour": "red"}', {"shipment.id": "s1"}, "")


def test_patch_path_overrides_body_id():
    binding = _binding("PATCH", "/shippings/{shipment.id}")

    request = _build(
        binding,
        b'{"id": "other", "status": "shipped"}',
        {"shipment.id": "s1"},
        "",
        shipment_pb2.UpdateShipmentRequest,
    )

    assert request.shipment.id == "s1"
    assert list(request.update_mask.paths) == ["id", "status"]


def test_fieldmask_nested_and_maps():
    paths = field_mask_paths(
        {"statusTimes": {"shipped": "2024-01-01T00:00:00Z"}, "history": [], "statusTime": None},
        descriptor_of(shipment_pb2.Shipment()),
    )

    assert paths == ["history", "status_time", "status_times"]


def test_fieldmask_nested_message_keys():
    paths = field_mask_paths(
        {"error": {"code": 3, "message": "x"}, "type": "t"}, descriptor_of(task_pb2.Task())
    )

    assert paths == ["error.code", "error.message", "type"]


def test_fieldmask_empty_object_is_leaf():
    assert field_mask_paths({"error": {}}, descriptor_of(task_pb2.Task())) == ["error"]


def test_fieldmask_unknown_key_error():
    with pytest.raises(FieldMaskError):
        field_mask_paths({"nope": 1}, descriptor_of(task_pb2.Task()))


def test_query_repeated_by_repetition():
    binding = _binding("GET", "/api/status:batchGet")

    request = _build(
        binding,
        b"",
        {},
        "shipment_ids=a&shipment_ids=b&taskIds=t1",
        status_pb2.BatchGetStatusRequest,
    )

    assert list(request.shipment_ids) == ["a", "b"]
    assert list(request.task_ids) == ["t1"]


def test_query_int_and_unknown_ignored():
    binding = _binding("GET", "/v1/shipments")

    request = _build(
        binding,
        b"",
        {},
        "page_size=25&pageToken=abc&status=shipped&junk=1",
        shipment_pb2.ListShipmentsRequest,
    )

    assert request.page_size == 25
    assert request.page_token == "abc"
    assert request.status == "shipped"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("page_size=abc", "page_size"),
        ("page_size=99999999999", "out of range"),
        ("page_size=1&page_size=2", "too many values"),
        ("page_size=1.5", "page_size"),
    ],
)
def test_query_bad_values_rejected(query: str, expected: str):
    binding = _binding("GET", "/v1/shipments")

    with pytest.raises(RequestError, match=expected):
        build_request(binding, b"", {}, query)


def test_query_ignored_for_path_field():
    binding = _binding("GET", "/v1/shipments/{id}")

    request = _build(binding, b"", {"id": "s1"}, "id=other", shipment_pb2.GetShipmentRequest)

    assert request.id == "s1"


def _field_of(message: Message, path: str) -> list[FieldDescriptor]:
    fields = resolve_field_path(descriptor_of(message), path.split("."))
    assert fields is not None
    return fields


def test_fields_enum_by_name_or_number():
    message = status_pb2.TaskStatus()

    set_field(message, _field_of(message, "state"), ["RUNNING"])
    assert message.state == task_pb2.Task.RUNNING
    set_field(message, _field_of(message, "state"), ["4"])
    assert message.state == task_pb2.Task.SUCCEEDED
    with pytest.raises(FieldValueError, match="state"):
        set_field(message, _field_of(message, "state"), ["BOGUS"])
    with pytest.raises(FieldValueError, match="state"):
        set_field(message, _field_of(message, "state"), ["42"])


def test_fields_bool_go_syntax():
    true_message = task_pb2.ShipmentResult()
    false_message = task_pb2.ShipmentResult(ok=True)

    set_field(true_message, _field_of(true_message, "ok"), ["t"])
    set_field(false_message, _field_of(false_message, "ok"), ["False"])

    assert true_message.ok
    assert not false_message.ok
    with pytest.raises(FieldValueError, match="ok"):
        set_field(true_message, _field_of(true_message, "ok"), ["yes"])


def test_fields_nested_path_creates_parent():
    message = shipment_pb2.UpdateShipmentRequest()

    set_field(message, _field_of(message, "shipment.status_time"), ["2024-01-02T03:04:05.5Z"])

    assert message.shipment.status_time.seconds == 1704164645
    assert message.shipment.status_time.nanos == 500_000_000


def test_fields_map_entry():
    message = shipment_pb2.Shipment()

    set_field(message, _field_of(message, "status_times"), ["shipped", "2024-01-01T00:00:00Z"])

    assert message.status_times["shipped"].seconds == 1704067200


@pytest.mark.parametrize(
    ("text", "seconds", "nanos"),
    [
        ("1.5s", 1, 500_000_000),
        ("1m30s", 90, 0),
        ("-2h", -7200, 0),
        ("250ms", 0, 250_000_000),
        ("0", 0, 0),
    ],
)
def test_fields_duration_go_syntax(text: str, seconds: int, nanos: int):
    duration = parse_message(duration_pb2.Duration.DESCRIPTOR, text, "d")

    assert isinstance(duration, duration_pb2.Duration)
    assert (duration.seconds, duration.nanos) == (seconds, -nanos if seconds < 0 else nanos)


@pytest.mark.parametrize("text", ["1", "s", "1.s5", "abc", "1x"])
def test_fields_duration_invalid(text: str):
    with pytest.raises(FieldValueError, match="work_duration"):
        parse_message(duration_pb2.Duration.DESCRIPTOR, text, "work_duration")


def test_fields_timestamp_invalid():
    with pytest.raises(FieldValueError, match="status_time"):
        parse_message(timestamp_pb2.Timestamp.DESCRIPTOR, "yesterday", "status_time")


def test_fields_field_mask_and_wrapper():
    mask = parse_message(field_mask_pb2.FieldMask.DESCRIPTOR, "status,substatus", "update_mask")
    wrapped = parse_message(wrappers_pb2.Int64Value.DESCRIPTOR, "-7", "limit")

    assert isinstance(mask, field_mask_pb2.FieldMask)
    assert list(mask.paths) == ["status", "substatus"]
    assert isinstance(wrapped, wrappers_pb2.Int64Value)
    assert wrapped.value == -7


def test_fields_plain_message_rejected():
    with pytest.raises(FieldValueError, match="cannot be set"):
        parse_message(descriptor_of(shipment_pb2.Shipment()), "x", "shipment")
