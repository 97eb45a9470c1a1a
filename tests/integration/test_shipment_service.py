"""ShipmentService over real gRPC on port 0 with a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envios.shipment.v1 import shipment_pb2 as pb
from envios.shipment.v1 import shipment_pb2_grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ops.topology import free_ports
from services.common.server import GrpcServer
from services.shipment.app import ShipmentApp, ShipmentConfig


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[Any]:
    # The status cache points at a closed port: writes through it are skipped and logged.
    config = ShipmentConfig.from_env(
        {
            "ENVIOS_DATABASE_URL": f"sqlite:///{tmp_path}/envios.db",
            "REDIS_URL": f"redis://127.0.0.1:{free_ports(1)[0]}/0",
            "ENVIOS_DRAIN_S": "0",
        }
    )
    server = GrpcServer(config.server, ShipmentApp(config, relay=False))
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield shipment_pb2_grpc.ShipmentServiceStub(channel)
    await server.stop()


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


async def create(stub: Any, shipment_id: str = "s1", **fields: Any) -> pb.Shipment:
    request = pb.CreateShipmentRequest(shipment=pb.Shipment(id=shipment_id, **fields))
    return await stub.CreateShipment(request)


async def move(stub: Any, shipment_id: str, status: str, **extra: Any) -> pb.Shipment:
    request = pb.UpdateShipmentRequest(shipment=pb.Shipment(id=shipment_id, status=status), **extra)
    return await stub.UpdateShipment(request)


async def test_create_starts_pending(stub: Any) -> None:
    shipment = await create(stub, tracking_number="TRK1")
    assert shipment.status == "pending"
    assert shipment.tracking_number == "TRK1"
    assert shipment.etag == 'W/"1"'
    assert [event.to_status for event in shipment.history] == ["pending"]
    assert "pending" in shipment.status_times


async def test_create_duplicate_id_already_exists(stub: Any) -> None:
    await create(stub)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(stub)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(raised.value).reason == "SHIPMENT_EXISTS"


async def test_create_invalid_id_rejected(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(stub, "bad/id")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shipment.id" in (raised.value.details() or "")


async def test_create_retry_returns_first_result(stub: Any) -> None:
    request = pb.CreateShipmentRequest(shipment=pb.Shipment(id="s1"), request_id="req-1")
    first = await stub.CreateShipment(request)
    again = await stub.CreateShipment(request)
    assert again == first


async def test_get_unknown_not_found(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetShipment(pb.GetShipmentRequest(id="missing"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(raised.value).reason == "SHIPMENT_NOT_FOUND"


async def test_walk_through_every_state(stub: Any) -> None:
    await create(stub)
    for status in ("handling", "ready_to_ship", "shipped", "delivered"):
        shipment = await move(stub, "s1", status)
        assert shipment.status == status
    fetched = await stub.GetShipment(pb.GetShipmentRequest(id="s1"))
    assert [event.to_status for event in fetched.history] == [
        "pending",
        "handling",
        "ready_to_ship",
        "shipped",
        "delivered",
    ]
    assert fetched.etag == 'W/"5"'


async def test_invalid_transition_names_allowed(stub: Any) -> None:
    await create(stub)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await move(stub, "s1", "delivered")
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(raised.value)
    assert info.reason == "INVALID_TRANSITION"
    assert info.metadata["current_status"] == "pending"
    assert info.metadata["allowed_next_statuses"] == "handling,cancelled"


async def test_unknown_status_invalid_argument(stub: Any) -> None:
    await create(stub)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await move(stub, "s1", "lost_in_space")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(raised.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "shipment.status"


async def test_wrong_etag_aborted(stub: Any) -> None:
    await create(stub)
    request = pb.UpdateShipmentRequest(
        shipment=pb.Shipment(id="s1", status="handling", etag='W/"7"')
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateShipment(request)
    assert raised.value.code() == grpc.StatusCode.ABORTED
    assert error_info(raised.value).reason == "ETAG_MISMATCH"


async def test_matching_etag_applies(stub: Any) -> None:
    created = await create(stub)
    request = pb.UpdateShipmentRequest(
        shipment=pb.Shipment(id="s1", status="handling", etag=created.etag)
    )
    assert (await stub.UpdateShipment(request)).status == "handling"


async def test_update_retry_applies_once(stub: Any) -> None:
    await create(stub)
    first = await move(stub, "s1", "handling", request_id="evt-1")
    again = await move(stub, "s1", "handling", request_id="evt-1")
    assert again == first
    fetched = await stub.GetShipment(pb.GetShipmentRequest(id="s1"))
    assert len(fetched.history) == 2


async def test_request_id_reuse_already_exists(stub: Any) -> None:
    await create(stub)
    await move(stub, "s1", "handling", request_id="evt-1")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await move(stub, "s1", "cancelled", request_id="evt-1")
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(raised.value).reason == "REQUEST_ID_REUSED"


async def test_late_event_recorded_not_applied(stub: Any) -> None:
    await create(stub)
    shipped_at = timestamp_pb2.Timestamp(seconds=2_000_000)
    for status in ("handling", "ready_to_ship", "shipped"):
        request = pb.UpdateShipmentRequest(
            shipment=pb.Shipment(id="s1", status=status, status_time=shipped_at)
        )
        await stub.UpdateShipment(request)
    old = timestamp_pb2.Timestamp(seconds=1_000_000)
    late = pb.UpdateShipmentRequest(
        shipment=pb.Shipment(id="s1", status="handling", status_time=old)
    )
    shipment = await stub.UpdateShipment(late)
    assert shipment.status == "shipped"
    assert shipment.history[-1].to_status == "handling"
    assert shipment.history[-1].late
    assert not shipment.history[-1].applied


async def test_unknown_mask_path_rejected(stub: Any) -> None:
    await create(stub)
    request = pb.UpdateShipmentRequest(
        shipment=pb.Shipment(id="s1", status="handling"),
        update_mask=field_mask_pb2.FieldMask(paths=["create_time"]),
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateShipment(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "create_time" in (raised.value.details() or "")


async def test_update_unknown_not_found(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await move(stub, "ghost", "handling")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_filters_and_pages(stub: Any) -> None:
    for index in range(5):
        await create(stub, f"s{index}")
    await move(stub, "s1", "handling")
    page = await stub.ListShipments(pb.ListShipmentsRequest(status="pending", page_size=2))
    assert [shipment.id for shipment in page.shipments] == ["s0", "s2"]
    rest = await stub.ListShipments(
        pb.ListShipmentsRequest(status="pending", page_size=2, page_token=page.next_page_token)
    )
    assert [shipment.id for shipment in rest.shipments] == ["s3", "s4"]
    assert rest.next_page_token == ""


async def test_list_token_of_other_filter_rejected(stub: Any) -> None:
    for index in range(3):
        await create(stub, f"s{index}")
    page = await stub.ListShipments(pb.ListShipmentsRequest(page_size=1))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListShipments(
            pb.ListShipmentsRequest(status="pending", page_token=page.next_page_token)
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
