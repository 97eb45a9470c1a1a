"""State machine table, late events and input checks of the shipment domain."""

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.shipment.domain import (
    NEXT_STATUSES,
    STATUSES,
    Change,
    ShipmentState,
    check_id,
    plan_change,
    validate_change,
)

T0 = 1_600_000_000_000_000
ALLOWED = {(start, target) for start, targets in NEXT_STATUSES.items() for target in targets}


def state(status: str, status_time_us: int = T0) -> ShipmentState:
    return ShipmentState(
        id="s1",
        status=status,
        substatus="",
        tracking_number="",
        status_time_us=status_time_us,
        status_times_us={status: status_time_us},
        create_time_us=T0,
        update_time_us=T0,
        version=3,
    )


@pytest.mark.parametrize("start", STATUSES)
@pytest.mark.parametrize("target", STATUSES)
def test_transition_table(start: str, target: str) -> None:
    change = Change(status=target, occurred_at_us=T0 + 10)
    if (start, target) in ALLOWED or start == target:
        outcome = plan_change(state(start), change, T0 + 20)
        assert outcome.applied
        assert outcome.state is not None
        assert outcome.state.status == target
    else:
        with pytest.raises(FailedPrecondition) as raised:
            plan_change(state(start), change, T0 + 20)
        assert raised.value.reason == "INVALID_TRANSITION"
        assert raised.value.metadata["current_status"] == start
        assert raised.value.metadata["allowed_next_statuses"] == ",".join(NEXT_STATUSES[start])


def test_terminal_statuses_allow_nothing() -> None:
    assert NEXT_STATUSES["delivered"] == ()
    assert NEXT_STATUSES["not_delivered"] == ()
    assert NEXT_STATUSES["cancelled"] == ()


def test_applied_change_bumps_version_and_times() -> None:
    outcome = plan_change(
        state("pending"), Change(status="handling", occurred_at_us=T0 + 5), T0 + 9
    )
    assert outcome.state is not None
    assert outcome.state.version == 4
    assert outcome.state.status_time_us == T0 + 5
    assert outcome.state.status_times_us["handling"] == T0 + 5
    assert outcome.state.update_time_us == T0 + 9
    assert not outcome.late


def test_late_backward_event_recorded_only() -> None:
    outcome = plan_change(
        state("shipped"), Change(status="handling", occurred_at_us=T0 - 1), T0 + 9
    )
    assert outcome.state is None
    assert not outcome.applied
    assert outcome.late
    assert outcome.to_status == "handling"


def test_late_repeat_of_current_status_recorded_only() -> None:
    outcome = plan_change(state("shipped"), Change(status="shipped", occurred_at_us=T0 - 1), T0 + 9)
    assert outcome.state is None
    assert outcome.late


def test_newer_backward_event_rejected() -> None:
    with pytest.raises(FailedPrecondition):
        plan_change(state("shipped"), Change(status="handling", occurred_at_us=T0 + 1), T0 + 9)


def test_late_forward_event_applied_and_marked() -> None:
    outcome = plan_change(
        state("handling"), Change(status="ready_to_ship", occurred_at_us=T0 - 50), T0 + 9
    )
    assert outcome.applied
    assert outcome.late
    assert outcome.state is not None
    assert outcome.state.status == "ready_to_ship"


def test_substatus_changes_within_status() -> None:
    outcome = plan_change(state("ready_to_ship"), Change(substatus="printed"), T0 + 9)
    assert outcome.state is not None
    assert outcome.state.status == "ready_to_ship"
    assert outcome.state.substatus == "printed"


def test_status_change_resets_substatus() -> None:
    current = state("ready_to_ship")
    printed = plan_change(current, Change(substatus="printed"), T0 + 1).state
    assert printed is not None
    shipped = plan_change(printed, Change(status="shipped", occurred_at_us=T0 + 2), T0 + 3).state
    assert shipped is not None
    assert shipped.substatus == ""


def test_unknown_substatus_is_stored() -> None:
    outcome = plan_change(state("shipped"), Change(substatus="brand_new_carrier_code"), T0 + 9)
    assert outcome.state is not None
    assert outcome.state.substatus == "brand_new_carrier_code"


def test_validate_change_lists_every_problem() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_change(Change(status="HANDLING", substatus="x" * 65))
    fields = [field for field, _ in raised.value.violations]
    assert fields == ["shipment.status", "shipment.substatus"]


def test_validate_change_needs_a_field() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_change(Change())
    assert raised.value.violations[0][0] == "update_mask"


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("abc", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("-a", False),
        ("a/b", False),
    ],
)
def test_check_id(value: str, valid: bool) -> None:
    assert (check_id("id", value) == []) is valid
