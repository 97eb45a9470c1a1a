"""JSON bodies into messages: the planned path must give ParseDict's result in every case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from envios.shipment.v1 import shipment_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import unmarshal
from gateway.unmarshal import parse_dict
from tests.integration.gateway_harness import load_test_source


@pytest.fixture(scope="module")
def everything_class(tmp_path_factory: pytest.TempPathFactory) -> type[Message]:
    _, source = load_test_source(Path(tmp_path_factory.mktemp("facadetest")))
    descriptor = source.pool.FindMessageTypeByName("facadetest.v1.UpdateEverythingRequest")
    return message_factory.GetMessageClass(descriptor)


def _outcome(parse: Any, document: Any, message_class: type[Message]) -> tuple[str, Any]:
    """Return ("ok", the message) or (the exception type, its text) for one parse."""
    message = message_class()
    try:
        parse(document, message)
    except Exception as error:
        return type(error).__name__, str(error)
    return "ok", message


def _reference(document: Any, message: Message) -> None:
    json_format.ParseDict(document, message, ignore_unknown_fields=True)


def _assert_same(document: Any, message_class: type[Message]) -> None:
    assert _outcome(parse_dict, document, message_class) == _outcome(
        _reference, document, message_class
    )


def _forbid_parse_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the document went to json_format.ParseDict")

    monkeypatch.setattr(json_format, "ParseDict", fail)


PLANNED_DOCUMENTS = [
    {"everything": {"displayName": "renamed", "nested": {"name": "n", "count": "3"}}},
    {"everything": {"display_name": "x", "tags": ["a", "b"], "numbers": [1, -2]}},
    {"everything": {"int64Value": "-9223372036854775808", "uint64Value": 18446744073709551615}},
    {"everything": {"color": "RED", "colors": ["GREEN", 0, 1]}},
    {"everything": {"boolValue": True, "nestedList": [{"name": "a"}, {}]}},
    {"everything": {"timestamp": "2024-05-01T10:00:00Z", "duration": "1.5s", "mask": "a.b,c"}},
    {"everything": {"nested": {}}, "updateMask": "displayName", "requestId": "r1"},
    {"everything": {"displayName": "São Paulo"}},
    {},
]


@pytest.mark.parametrize("document", PLANNED_DOCUMENTS)
def test_planned_document_skips_parse_dict(
    document: dict[str, Any], everything_class: type[Message], monkeypatch: pytest.MonkeyPatch
):
    expected = everything_class()
    _reference(document, expected)
    _forbid_parse_dict(monkeypatch)

    message = everything_class()
    parse_dict(document, message)

    assert message == expected


def test_shipment_update_skips_parse_dict(monkeypatch: pytest.MonkeyPatch):
    document = {
        "shipment": {
            "status": "shipped",
            "substatus": "picked_up",
            "statusTime": "2024-05-01T10:00:00Z",
        },
        "requestId": "r-1",
    }
    expected = shipment_pb2.UpdateShipmentRequest()
    _reference(document, expected)
    _forbid_parse_dict(monkeypatch)

    message = shipment_pb2.UpdateShipmentRequest()
    parse_dict(document, message)

    assert message == expected


FALLBACK_DOCUMENTS = [
    {"everything": {"doubleValue": 1.5}},
    {"everything": {"bytesValue": "aGk="}},
    {"everything": {"labels": {"a": "b"}}},
    {"everything": {"choiceText": "t"}},
    {"everything": {"choiceText": "t", "choiceNumber": 1}},
    {"everything": {"optionalText": ""}},
    {"everything": {"displayName": None}},
    {"everything": {"unknownKey": 1}},
    {"everything": {"displayName": "a", "display_name": "b"}},
    {"everything": {"nestedList": [{"name": "a"}], "nested_list": [{"name": "b"}]}},
    {"everything": {"int32Value": 2**31}},
    {"everything": {"int32Value": 1.0}},
    {"everything": {"int32Value": "1_000"}},
    {"everything": {"uint64Value": -1}},
    {"everything": {"displayName": "\ud800"}},
    {"everything": {"color": "NOT_A_COLOR"}},
    {"everything": {"color": 99}},
    {"everything": {"boolValue": "true"}},
    {"everything": {"tags": "a"}},
    {"everything": {"tags": [None]}},
    {"everything": {"nestedList": [None]}},
    {"everything": {"nested": []}},
    {"everything": {"timestamp": "yesterday"}},
    {"everything": {"timestamp": 5}},
    {"everything": {"structValue": {"a": 1}}},
    {"everything": {"stringWrapper": "w"}},
    {"everything": {"[ext.field]": 1}},
    {"everything": "not an object"},
    {"everything": {"nested": {"name": "n", "count": "3"}, "doubleValue": 2}},
]


@pytest.mark.parametrize("document", FALLBACK_DOCUMENTS)
def test_fallback_document_same_as_parse_dict(
    document: dict[str, Any], everything_class: type[Message]
):
    _assert_same(document, everything_class)


def test_fallback_clears_planned_fields(everything_class: type[Message]):
    # The planned path sets displayName before it meets the float, so ParseDict must start
    # from an empty message.
    document = {"everything": {"displayName": "kept", "tags": ["a"], "doubleValue": 2.5}}

    message: Any = everything_class()
    parse_dict(document, message)

    assert list(message.everything.tags) == ["a"]
    assert message.everything.display_name == "kept"
    assert message.everything.double_value == 2.5


def _node_class() -> type[Message]:
    """Return the class of ``message Node { Node child = 1; string name = 2; }``."""
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="node.proto", package="test", syntax="proto3"
    )
    node = file_proto.message_type.add(name="Node")
    node.field.add(
        name="child",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name=".test.Node",
    )
    node.field.add(name="name", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("test.Node"))


@pytest.mark.parametrize("depth", [unmarshal.MAX_PLANNED_DEPTH, 99, 100, 150])
def test_deep_nesting_same_as_parse_dict(depth: int):
    document: dict[str, Any] = {"name": "leaf"}
    for _ in range(depth):
        document = {"child": document}

    _assert_same(document, _node_class())


FIELD_KEYS = [
    "id",
    "displayName",
    "display_name",
    "int32Value",
    "int64Value",
    "uint64Value",
    "boolValue",
    "color",
    "tags",
    "numbers",
    "colors",
    "nested",
    "nestedList",
    "nested_list",
    "timestamp",
    "duration",
    "mask",
    "doubleValue",
    "choiceText",
    "optionalText",
    "unknown",
]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["RED", "3", "-7", "1.5s", "2024-05-01T10:00:00Z", "a,b", "007"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from([*FIELD_KEYS, "name", "count"]), children, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(everything=st.dictionaries(st.sampled_from(FIELD_KEYS), json_values, max_size=5))
def test_random_documents_same_as_parse_dict(
    everything: dict[str, Any], everything_class: type[Message]
):
    _assert_same({"everything": everything}, everything_class)
