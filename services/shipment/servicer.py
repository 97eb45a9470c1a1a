"""ShipmentService servicer: proto messages in and out, the store does the work."""

from __future__ import annotations

import base64
import hashlib

from envios.shipment.v1 import shipment_pb2, shipment_pb2_grpc
from google.protobuf import message as proto_message

from services.common.database import now_us
from services.common.errors import Context, InvalidArgument
from services.common.timeutil import from_us, to_us
from services.shipment import domain
from services.shipment.store import ShipmentStore, ShipmentView

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

UPDATABLE_PATHS = frozenset({"status", "substatus", "tracking_number", "status_time"})
"""Update mask paths that change the shipment."""
IGNORED_PATHS = frozenset({"id", "etag"})
"""Update mask paths that identify the shipment or act as a precondition."""


class ShipmentServicer(shipment_pb2_grpc.ShipmentServiceServicer):
    def __init__(self, store: ShipmentStore) -> None:
        self.store = store

    async def CreateShipment(
        self, request: shipment_pb2.CreateShipmentRequest, context: Context
    ) -> shipment_pb2.Shipment:
        state = new_shipment(request)
        view = await self.store.create(state, request.request_id, fingerprint(request))
        return to_proto(view)

    async def GetShipment(
        self, request: shipment_pb2.GetShipmentRequest, context: Context
    ) -> shipment_pb2.Shipment:
        _raise_if(domain.check_id("id", request.id))
        return to_proto(await self.store.get(request.id))

    async def ListShipments(
        self, request: shipment_pb2.ListShipmentsRequest, context: Context
    ) -> shipment_pb2.ListShipmentsResponse:
        size, after_id = parse_page(request)
        states = await self.store.list(request.status, after_id, size + 1)
        response = shipment_pb2.ListShipmentsResponse(
            shipments=[to_proto(ShipmentView(state, [])) for state in states[:size]]
        )
        if len(states) > size:
            response.next_page_token = page_token(request.status, states[size - 1].id)
        return response

    async def UpdateShipment(
        self, request: shipment_pb2.UpdateShipmentRequest, context: Context
    ) -> shipment_pb2.Shipment:
        change = parse_change(request)
        view = await self.store.update(
            request.shipment.id,
            change,
            request.request_id,
            fingerprint(request),
            request.shipment.etag,
        )
        return to_proto(view)


def _raise_if(violations: list[tuple[str, str]]) -> None:
    if violations:
        raise InvalidArgument(violations)


def fingerprint(request: proto_message.Message) -> str:
    """Hash the request without its ``request_id``, to detect a key reused for other content."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def new_shipment(request: shipment_pb2.CreateShipmentRequest) -> domain.ShipmentState:
    """Validate a create request and build the initial ``pending`` state."""
    given = request.shipment
    violations = domain.check_id("shipment.id", given.id)
    violations += domain.check_text("shipment.substatus", given.substatus)
    violations += domain.check_text("shipment.tracking_number", given.tracking_number)
    violations += _check_request_id(request.request_id)
    if given.status and given.status != "pending":
        violations.append(
            ("shipment.status", "must be empty or 'pending'; shipments start pending")
        )
    _raise_if(violations)
    now = now_us()
    entered = to_us(given.status_time) if given.HasField("status_time") else now
    return domain.ShipmentState(
        id=given.id,
        status="pending",
        substatus=given.substatus,
        tracking_number=given.tracking_number,
        status_time_us=entered,
        status_times_us={"pending": entered},
        create_time_us=now,
        update_time_us=now,
        version=1,
    )


def parse_change(request: shipment_pb2.UpdateShipmentRequest) -> domain.Change:
    """Turn an update request into a domain change, checking the mask and every field."""
    shipment = request.shipment
    paths = list(request.update_mask.paths) or _set_paths(shipment)
    violations = domain.check_id("shipment.id", shipment.id) + _check_request_id(request.request_id)
    for path in paths:
        if path not in UPDATABLE_PATHS | IGNORED_PATHS:
            violations.append(
                (
                    "update_mask",
                    f"field {path!r} cannot be updated; updatable: "
                    + ", ".join(sorted(UPDATABLE_PATHS)),
                )
            )
    if "status_time" in paths and not shipment.HasField("status_time"):
        violations.append(("shipment.status_time", "is in the update mask but not set"))
    _raise_if(violations)
    change = domain.Change(
        status=shipment.status if "status" in paths else None,
        substatus=shipment.substatus if "substatus" in paths else None,
        tracking_number=shipment.tracking_number if "tracking_number" in paths else None,
        occurred_at_us=to_us(shipment.status_time) if "status_time" in paths else 0,
        task_id=request.task_id,
    )
    domain.validate_change(change)
    return change


def _set_paths(shipment: shipment_pb2.Shipment) -> list[str]:
    paths = [name for name in ("status", "substatus", "tracking_number") if getattr(shipment, name)]
    return paths + (["status_time"] if shipment.HasField("status_time") else [])


def _check_request_id(request_id: str) -> list[tuple[str, str]]:
    return domain.check_id("request_id", request_id) if request_id else []


def parse_page(request: shipment_pb2.ListShipmentsRequest) -> tuple[int, str]:
    """Return the page size and the id to continue after."""
    violations = domain.check_status("status", request.status or None)
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        violations.append(
            ("page_size", f"must be from 0 to {MAX_PAGE_SIZE}, got {request.page_size}")
        )
    after_id = ""
    if request.page_token:
        after_id = _read_page_token(request.page_token, request.status, violations)
    _raise_if(violations)
    return request.page_size or DEFAULT_PAGE_SIZE, after_id


def page_token(status: str, last_id: str) -> str:
    return base64.urlsafe_b64encode(f"{status}\n{last_id}".encode()).decode()


def _read_page_token(token: str, status: str, violations: list[tuple[str, str]]) -> str:
    try:
        token_status, _, last_id = base64.urlsafe_b64decode(token.encode()).decode().partition("\n")
    except (ValueError, UnicodeDecodeError):
        violations.append(("page_token", "is not a token returned by ListShipments"))
        return ""
    if token_status != status:
        violations.append(("page_token", "was issued for a different status filter"))
    return last_id


def to_proto(view: ShipmentView) -> shipment_pb2.Shipment:
    state = view.state
    shipment = shipment_pb2.Shipment(
        id=state.id,
        status=state.status,
        substatus=state.substatus,
        tracking_number=state.tracking_number,
        status_time=from_us(state.status_time_us),
        create_time=from_us(state.create_time_us),
        update_time=from_us(state.update_time_us),
        etag=state.etag,
    )
    for status, entered in state.status_times_us.items():
        shipment.status_times[status].CopyFrom(from_us(entered))
    for event in view.history:
        shipment.history.add(
            event_id=event.event_id,
            from_status=event.from_status,
            to_status=event.to_status,
            from_substatus=event.from_substatus,
            to_substatus=event.to_substatus,
            occurred_at=from_us(event.occurred_at_us),
            record_time=from_us(event.record_time_us),
            applied=event.applied,
            late=event.late,
            task_id=event.task_id,
        )
    return shipment
