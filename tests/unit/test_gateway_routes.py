"""Path template parsing, matching and route precedence of the gateway."""

from __future__ import annotations

import pytest

from gateway.bindings import load_bindings
from gateway.routes import (
    LookupStatus,
    PathTemplate,
    Route,
    RouteOrder,
    Router,
    SegmentKind,
    TemplateError,
    parse_template,
)


def test_parse_literals_and_variable():
    template = parse_template("/v1/shipments/{id}")

    assert [s.kind for s in template.segments] == [
        SegmentKind.LITERAL,
        SegmentKind.LITERAL,
        SegmentKind.WILDCARD,
    ]
    assert template.variables[0].field_path == "id"
    assert template.verb == ""


def test_parse_verb_after_variable():
    template = parse_template("/v1/tasks/{id}:cancel")

    assert template.verb == "cancel"
    assert template.match(["v1", "tasks", "t1"], "cancel") == {"id": "t1"}


def test_parse_verb_after_literal():
    template = parse_template("/api/status:batchGet")

    assert template.verb == "batchGet"
    assert [s.text for s in template.segments] == ["api", "status"]


def test_parse_nested_field_path():
    template = parse_template("/v1/shipments/{shipment.id}")

    assert template.match(["v1", "shipments", "s1"], "") == {"shipment.id": "s1"}


def test_parse_variable_with_segments():
    template = parse_template("/v1/{name=shelves/*/books/*}")

    assert template.match(["v1", "shelves", "s1", "books", "b2"], "") == {
        "name": "shelves/s1/books/b2"
    }
    assert template.match(["v1", "racks", "s1", "books", "b2"], "") is None


def test_parse_deep_wildcard_variable():
    template = parse_template("/v1/{path=**}")

    assert template.match(["v1", "a", "b", "c"], "") == {"path": "a/b/c"}
    assert template.match(["v1"], "") == {"path": ""}


def test_parse_deep_wildcard_with_tail():
    template = parse_template("/v1/{path=**}/tail")

    assert template.match(["v1", "a", "b", "tail"], "") == {"path": "a/b"}
    assert template.match(["v1", "a", "b"], "") is None


def test_parse_anonymous_wildcards():
    template = parse_template("/v1/*/x/**")

    assert template.variables == ()
    assert template.match(["v1", "any", "x", "1", "2"], "") == {}


@pytest.mark.parametrize(
    "source",
    [
        "v1/missing-slash",
        "/v1/{id",
        "/v1/{a={b}}",
        "/v1/{1bad}",
        "/v1/**/x/**",
        "/v1/{id}/{id}",
        "/v1/x:",
        "/v1//x",
    ],
)
def test_parse_rejects_invalid(source: str):
    with pytest.raises(TemplateError):
        parse_template(source)


def test_match_wrong_length_fails():
    template = parse_template("/v1/shipments/{id}")

    assert template.match(["v1", "shipments"], "") is None
    assert template.match(["v1", "shipments", "a", "b"], "") is None


def test_match_verb_must_agree():
    template = parse_template("/v1/tasks/{id}:cancel")

    assert template.match(["v1", "tasks", "t1"], "") is None
    assert template.match(["v1", "tasks", "t1"], "pause") is None


def _router(*specs: tuple[str, str], order: RouteOrder = RouteOrder.REGISTRATION) -> Router[str]:
    return Router((Route(method, parse_template(path), path) for method, path in specs), order)


def test_router_last_registered_wins():
    router = _router(("GET", "/v1/users/me"), ("GET", "/v1/users/{id}"))

    match = router.lookup("GET", "/v1/users/me")

    assert match.route is not None
    assert match.route.target == "/v1/users/{id}"
    assert match.params == {"id": "me"}


def test_router_bare_verb_not_found():
    router = _router(("POST", "/v1/{name=**}"), ("POST", "/v1/tasks:run"))

    assert router.lookup("POST", "/v1/:run").status is LookupStatus.NOT_FOUND
    assert router.lookup("POST", "/v1/x:run").route is not None


def test_router_get_fallback_candidate():
    router = _router(("GET", "/v1/items/{id}"), ("DELETE", "/v1/items/{id}"))

    match = router.lookup("POST", "/v1/items/7")

    assert match.status is LookupStatus.METHOD_NOT_ALLOWED
    assert match.get_route is not None
    assert match.get_route.method == "GET"
    assert match.params == {"id": "7"}


def test_router_literal_beats_variable():
    router = _router(
        ("GET", "/v1/users/{id}"), ("GET", "/v1/users/me"), order=RouteOrder.SPECIFICITY
    )

    match = router.lookup("GET", "/v1/users/me")

    assert match.route is not None
    assert match.route.target == "/v1/users/me"


def test_router_variable_beats_deep_wildcard():
    router = _router(("GET", "/v1/{id}"), ("GET", "/v1/{rest=**}"), order=RouteOrder.SPECIFICITY)

    match = router.lookup("GET", "/v1/x")

    assert match.route is not None
    assert match.route.target == "/v1/{id}"
    assert match.params == {"id": "x"}


def test_router_verb_split_only_for_verb_templates():
    router = _router(("GET", "/v1/tasks/{id}"), ("POST", "/v1/tasks/{id}:cancel"))

    get = router.lookup("GET", "/v1/tasks/t1:cancel")
    post = router.lookup("POST", "/v1/tasks/t1:cancel")

    assert get.params == {"id": "t1:cancel"}
    assert post.params == {"id": "t1"}


def test_router_unknown_path_not_found():
    router = _router(("GET", "/v1/shipments/{id}"))

    assert router.lookup("GET", "/v2/x").status is LookupStatus.NOT_FOUND


def test_router_other_method_not_allowed():
    router = _router(("GET", "/v1/shipments/{id}"))

    assert router.lookup("DELETE", "/v1/shipments/1").status is LookupStatus.METHOD_NOT_ALLOWED


def test_router_decoded_path_values():
    router = _router(("GET", "/v1/shipments/{id}"))

    match = router.lookup("GET", "/v1/shipments/a b:c")

    assert match.params == {"id": "a b:c"}


def test_router_encoded_slash_splits_segments():
    # grpc-gateway's default unescaping decodes the whole path before routing, so a
    # decoded %2F is a separator and the path has one segment too many.
    router = _router(("GET", "/v1/shipments/{id}"))

    assert router.lookup("GET", "/v1/shipments/a/b").status is LookupStatus.NOT_FOUND


def test_router_specificity_key_orders_kinds():
    literal = parse_template("/a/b")
    variable = parse_template("/a/{x}")
    deep = parse_template("/a/{x=**}")

    ordered = sorted([deep, variable, literal], key=lambda t: t.specificity)

    assert [t.source for t in ordered] == ["/a/b", "/a/{x}", "/a/{x=**}"]


ENVIOS_ROUTES = [
    ("POST", "/v1/shipments", "CreateShipment", {}),
    ("GET", "/v1/shipments/s1", "GetShipment", {"id": "s1"}),
    ("GET", "/v1/shipments", "ListShipments", {}),
    ("PATCH", "/v1/shipments/s1", "UpdateShipment", {"shipment.id": "s1"}),
    ("PATCH", "/shippings/s1", "UpdateShipment", {"shipment.id": "s1"}),
    ("POST", "/v1/tasks", "SubmitTask", {}),
    ("POST", "/api/tarea-concurrente", "SubmitTask", {}),
    ("GET", "/v1/tasks/t1", "GetTask", {"id": "t1"}),
    ("POST", "/v1/tasks/t1:cancel", "CancelTask", {"id": "t1"}),
    ("GET", "/api/status/shipments/s1", "GetShipmentStatus", {"shipment_id": "s1"}),
    ("GET", "/v1/status/shipments/s1", "GetShipmentStatus", {"shipment_id": "s1"}),
    ("GET", "/api/status/tasks/t1", "GetTaskStatus", {"task_id": "t1"}),
    ("GET", "/v1/status/tasks/t1", "GetTaskStatus", {"task_id": "t1"}),
    ("GET", "/api/status:batchGet", "BatchGetStatus", {}),
    ("GET", "/v1/status:batchGet", "BatchGetStatus", {}),
    ("GET", "/api/status", "GetOverview", {}),
    ("GET", "/v1/status", "GetOverview", {}),
]


@pytest.mark.parametrize(("method", "path", "rpc", "params"), ENVIOS_ROUTES)
def test_router_envios_routes(method: str, path: str, rpc: str, params: dict[str, str]):
    bindings = load_bindings()
    router = Router(Route(b.http_method, b.template, b) for b in bindings)

    match = router.lookup(method, path)

    assert match.status is LookupStatus.FOUND
    assert match.route is not None
    assert match.route.target.method.name == rpc
    assert match.params == params


def test_router_envios_status_paths_distinct():
    bindings = load_bindings()
    router = Router(Route(b.http_method, b.template, b) for b in bindings)

    assert router.lookup("GET", "/api/status:other").status is LookupStatus.NOT_FOUND
    assert router.lookup("GET", "/api/status/shipments").status is LookupStatus.NOT_FOUND


def test_template_is_frozen():
    template = parse_template("/v1/x")

    assert isinstance(template, PathTemplate)
    with pytest.raises(AttributeError):
        template.verb = "y"  # type: ignore[misc]
