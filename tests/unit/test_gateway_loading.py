"""Loading bindings from descriptor sets, JSON number output and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from gateway.app import configured_bindings
from gateway.bindings import BindingError, load_bindings, load_source_bindings
from gateway.config import GatewayConfig
from gateway.descriptors import DescriptorSetError, pool_from_files, read_descriptor_set
from gateway.marshal import double_value, dumps
from gateway.openapi import openapi_document


def _http_file(rule: http_pb2.HttpRule) -> list[descriptor_pb2.FileDescriptorProto]:
    dependencies = []
    for module in (http_pb2, annotations_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        dependencies.append(proto)
    for dependency in ("google/protobuf/descriptor.proto",):
        from google.protobuf import descriptor_pb2 as module

        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        assert proto.name == dependency
        dependencies.insert(0, proto)
    file = descriptor_pb2.FileDescriptorProto(
        name="demo/v1/demo.proto",
        package="demo.v1",
        syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    message = file.message_type.add(name="Thing")
    message.field.add(name="name", number=1, type=9, label=1, json_name="name")
    method = file.service.add(name="Demo").method.add(
        name="GetThing", input_type=".demo.v1.Thing", output_type=".demo.v1.Thing"
    )
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    return [*dependencies, file]


def test_loading_valid_rule():
    source = pool_from_files(_http_file(http_pb2.HttpRule(get="/v1/{name=things/*}")), "test")

    bindings = load_source_bindings(source)

    assert [b.describe for b in bindings] == ["GET /v1/{name=things/*} -> demo.v1.Demo.GetThing"]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (http_pb2.HttpRule(get="/v1/{name"), "'/v1/{name'"),
        (http_pb2.HttpRule(get="/v1/{missing}"), "'/v1/{missing}'"),
        (http_pb2.HttpRule(get="v1/things"), "'v1/things'"),
        (http_pb2.HttpRule(get="/v1/things", body="*"), "GET rules take no body"),
        (http_pb2.HttpRule(post="/v1/things", body="nope"), "body 'nope'"),
    ],
)
def test_loading_invalid_rule_names_rpc(rule: http_pb2.HttpRule, expected: str):
    source = pool_from_files(_http_file(rule), "test")

    with pytest.raises(BindingError) as raised:
        load_source_bindings(source)

    assert "demo.v1.Demo.GetThing" in str(raised.value)
    assert expected in str(raised.value)


def test_loading_missing_import_rejected():
    files = _http_file(http_pb2.HttpRule(get="/v1/things"))[-1:]

    with pytest.raises(DescriptorSetError, match="--include_imports"):
        pool_from_files(files, "test")


def test_loading_unknown_service_rejected():
    source = pool_from_files(_http_file(http_pb2.HttpRule(get="/v1/things")), "test")

    with pytest.raises(DescriptorSetError, match=r"demo\.v1\.Other"):
        load_source_bindings(source, ["demo.v1.Other"])


def test_loading_file_not_descriptor_set(tmp_path: Path):
    path = tmp_path / "bad.binpb"
    path.write_bytes(b"\xff\xff\xff")

    with pytest.raises(DescriptorSetError):
        read_descriptor_set(path)


def test_loading_generated_descriptor_set_file():
    path = Path(__file__).resolve().parents[2] / "gen" / "envios" / "descriptor_set.binpb"
    from_file = configured_bindings(GatewayConfig(descriptor_set=str(path)))

    assert sorted(b.describe for b in from_file) == sorted(b.describe for b in load_bindings())


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (1.0, b"1"),
        (-0.5, b"-0.5"),
        (0.1, b"0.1"),
        (1e20, b"100000000000000000000"),
        (1e21, b"1e+21"),
        (1.5e-5, b"0.000015"),
        (1e-7, b"1e-7"),
        (float("nan"), b'"NaN"'),
        (float("-inf"), b'"-Infinity"'),
    ],
)
def test_marshal_double_like_go(number: float, text: bytes):
    assert dumps(double_value(number)) == text


def test_openapi_envios_routes():
    document = openapi_document(load_bindings())

    patch = document["paths"]["/shippings/{shipment.id}"]["patch"]
    assert patch["operationId"] == "ShipmentService_UpdateShipment2"
    assert patch["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/envios.shipment.v1.Shipment"
    }
    assert {p["name"] for p in patch["parameters"]} >= {"shipment.id", "update_mask"}
    assert "google.rpc.Status" in document["components"]["schemas"]
