"""The gateway and Envoy's gRPC-JSON transcoder, fed the same descriptor set and backend.

Each case goes to both. ``SAME`` cases must give equal results (after the one global
normalisation below); cases in ``KNOWN_DIFFERENCES`` must give the gateway's documented
result and a different Envoy result, so the list in docs/facade.md stays true. The
gateway follows grpc-gateway v2 wherever the two disagree.

Global normalisation: the gateway prints unset message fields as ``null``
(grpc-gateway's ``EmitUnpopulated``) and Envoy omits them, so ``null`` members are removed
from the gateway's JSON before comparing.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import GatewayApp
from gateway.bindings import load_source_bindings
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from tests.integration.gateway_harness import (
    EchoBackend,
    TranscoderEnvoy,
    load_test_source,
    wait_for,
)

START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Case:
    """One HTTP request sent to both transcoders."""

    name: str
    method: str
    url: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    status_only: bool = False
    """Compare the HTTP status only: bodies of errors found before the call differ in text."""


@dataclass(frozen=True)
class Outcome:
    """The parts of a response that the comparison looks at."""

    status: int
    body: Any
    rpc: str | None
    headers: dict[str, str] = field(default_factory=dict)


class _Stack:
    """Echo backend, gateway and Envoy, served from one event loop in a helper thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.gateway_url = ""
        self.options_url = ""
        """A second gateway with every option set to Envoy's behaviour."""
        self.envoy: TranscoderEnvoy | None = None
        self._server: GatewayServer | None = None
        self._options_server: GatewayServer | None = None
        self._options_serving: asyncio.Future[None] | None = None
        self._serving: asyncio.Future[None] | None = None
        self._backend: EchoBackend | None = None

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(START_TIMEOUT_S)

    async def _start(self) -> None:
        path, source = load_test_source(self.directory)
        self._backend = EchoBackend(source)
        address = await self._backend.start()
        self.envoy = TranscoderEnvoy(path, address, self.directory)
        self.envoy.start()
        config = GatewayConfig(upstream_grpc=address, listen_address="127.0.0.1:0")
        app = GatewayApp(config, bindings=load_source_bindings(source))
        self._server = GatewayServer(app, config)
        self._serving = asyncio.ensure_future(self._server.serve())
        await wait_for(self._gateway_started, START_TIMEOUT_S, "the gateway to start")
        self.gateway_url = f"http://127.0.0.1:{self._server.port}"
        options = GatewayConfig(
            upstream_grpc=address,
            listen_address="127.0.0.1:0",
            route_order="specificity",
            path_unescaping="all-characters",
            path_fields_in_query="override",
        )
        options_app = GatewayApp(options, bindings=load_source_bindings(source))
        self._options_server = GatewayServer(options_app, options)
        self._options_serving = asyncio.ensure_future(self._options_server.serve())
        await wait_for(self._options_started, START_TIMEOUT_S, "the second gateway to start")
        self.options_url = f"http://127.0.0.1:{self._options_server.port}"
        await self.envoy.wait_ready()

    async def _gateway_started(self) -> bool:
        return self._server is not None and self._server.started

    async def _options_started(self) -> bool:
        return self._options_server is not None and self._options_server.started

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(START_TIMEOUT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    async def _stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        for server, serving in (
            (self._server, self._serving),
            (self._options_server, self._options_serving),
        ):
            if server is not None and serving is not None:
                server.should_exit = True
                await serving
        if self._backend is not None:
            await self._backend.stop()


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Stack]:
    stack = _Stack(tmp_path_factory.mktemp("differential"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def _send(base_url: str, case: Case, rpc_header: str) -> Outcome:
    headers = dict(case.headers)
    if case.body is not None:
        headers.setdefault("content-type", "application/json")
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        response = client.request(case.method, case.url, content=case.body, headers=headers)
    try:
        body: Any = json.loads(response.text)
    except json.JSONDecodeError:
        body = response.text
    headers = {name.lower(): value for name, value in response.headers.items()}
    return Outcome(response.status_code, body, response.headers.get(rpc_header), headers)


def _gateway(stacks: _Stack, case: Case) -> Outcome:
    outcome = _send(stacks.gateway_url, case, "grpc-metadata-echo-method")
    return Outcome(outcome.status, _without_nulls(outcome.body), outcome.rpc, outcome.headers)


def _envoy(stacks: _Stack, case: Case) -> Outcome:
    assert stacks.envoy is not None
    return _send(stacks.envoy.url, case, "echo-method")


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


SAME = [
    Case("plain variable", "GET", "/v1/everything/abc"),
    Case("nested variables", "GET", "/v1/nested/n1/items/7"),
    Case("multi-segment variable", "GET", "/v1/shelves/s1/books/b2"),
    Case("deep wildcard", "GET", "/v1/files/a/b/c"),
    Case("deep wildcard with tail", "GET", "/v1/tails/a/b/end"),
    Case("enum path by name", "GET", "/v1/colors/GREEN"),
    Case("enum path by number", "GET", "/v1/colors/2"),
    Case("percent-encoded space", "GET", "/v1/everything/a%20b"),
    Case("custom verb", "POST", "/v1/everything/e1:archive", _json({"displayName": "arch"})),
    Case("custom method kind", "SEARCH", "/v1/everything:search", _json({"id": "s"})),
    Case("additional binding body field", "POST", "/v1/everything/e1/nested", b'{"name":"n"}'),
    Case("body star unknown field", "POST", "/v1/everything", b'{"id":"e","colour":1}'),
    Case(
        "body proto and camel names",
        "POST",
        "/v1/everything",
        b'{"display_name":"p","int32Value":3}',
    ),
    Case("body empty", "POST", "/v1/everything", b""),
    Case("body scalar field", "POST", "/v1/scalars/s1/text", b'"hello"'),
    Case("body repeated field", "POST", "/v1/scalars/s1/values", b'["a","b"]'),
    Case("body wins over query", "POST", "/v1/scalars/s1/text?text=q&limit=4", b'"b"'),
    Case("malformed json", "POST", "/v1/everything", b'{"id":', status_only=True),
    Case("type mismatch", "POST", "/v1/everything", b'{"int32Value":"abc"}', status_only=True),
    Case("body not object", "POST", "/v1/everything", b"[1]", status_only=True),
    Case("query scalars", "GET", "/v1/everything/q?display_name=x&int64_value=-5&bool_value=true"),
    Case("query camel name", "GET", "/v1/everything/q?displayName=camel&int32Value=4"),
    Case("query nested dots", "GET", "/v1/everything/q?nested.name=n&nested.count=3"),
    Case("query repeated", "GET", "/v1/everything/q?tags=a&tags=b&numbers=1&numbers=2"),
    Case("query enum name and number", "GET", "/v1/everything/q?color=RED&colors=1&colors=GREEN"),
    Case("query timestamp", "GET", "/v1/everything/q?timestamp=2024-05-01T10:00:00.5Z"),
    Case("query duration", "GET", "/v1/everything/q?duration=90s"),
    Case("query field mask", "GET", "/v1/everything/q?mask=a,b.c"),
    Case(
        "query wrappers",
        "GET",
        "/v1/everything/q?string_wrapper=s&int64_wrapper=7&bool_wrapper=false",
    ),
    Case("query plus and escapes", "GET", "/v1/everything/q?display_name=a+b%21%2Fc"),
    Case(
        "query oneof conflict",
        "GET",
        "/v1/everything/q?choice_text=t&choice_number=3",
        status_only=True,
    ),
    Case("query bad integer", "GET", "/v1/everything/q?int32_value=abc", status_only=True),
    Case("query bad timestamp", "GET", "/v1/everything/q?timestamp=nope", status_only=True),
    Case("path bad nested integer", "GET", "/v1/nested/n/items/x", status_only=True),
    Case("put has no mask", "PUT", "/v1/everything/e1", _json({"displayName": "x"})),
    Case(
        "patch mask in query",
        "PATCH",
        "/v1/everything/e1?update_mask=display_name",
        b'{"displayName":"x"}',
    ),
    Case(
        "patch body star mask in body",
        "PATCH",
        "/v2/everything/e1",
        _json({"everything": {"displayName": "x"}, "updateMask": "displayName"}),
    ),
    Case("http body response", "GET", "/v1/raw?content_type=text/plain&text=hi"),
    *[Case(f"error code {code}", "GET", f"/v1/fail/{code}") for code in range(1, 17)],
]


@pytest.mark.parametrize("case", SAME, ids=[c.name for c in SAME])
def test_differential_same(stacks: _Stack, case: Case):
    gateway = _gateway(stacks, case)
    envoy = _envoy(stacks, case)

    assert gateway.status == envoy.status
    if not case.status_only:
        assert gateway.body == envoy.body
        assert gateway.rpc == envoy.rpc


def _lines(outcome: Outcome) -> list[Any]:
    text = outcome.body if isinstance(outcome.body, str) else json.dumps(outcome.body)
    return [json.loads(line) for line in text.splitlines() if line]


def _expect_rpc(rpc: str, **fields: Any) -> Any:
    def check(outcome: Outcome) -> None:
        assert outcome.status == 200, outcome.body
        assert outcome.rpc == rpc
        for name, value in fields.items():
            assert outcome.body[name] == value, name

    return check


def _expect_error(status: int, code: int, message: str | None = None) -> Any:
    def check(outcome: Outcome) -> None:
        assert outcome.status == status
        assert outcome.headers["content-type"] == "application/json"
        assert outcome.body["code"] == code
        if message is not None:
            assert outcome.body["message"] == message

    return check


def _expect_fields(**fields: Any) -> Any:
    def check(outcome: Outcome) -> None:
        assert outcome.status == 200, outcome.body
        for name, value in fields.items():
            assert outcome.body[name] == value, name

    return check


def _expect_www_authenticate(outcome: Outcome) -> None:
    assert outcome.status == 401
    assert outcome.headers["www-authenticate"] == "failed with 16"


def _expect_stream_results(outcome: Outcome) -> None:
    assert outcome.status == 200
    assert _lines(outcome) == [
        {"result": {"name": "s1-0", "count": "0"}},
        {"result": {"name": "s1-1", "count": "1"}},
    ]


def _expect_stream_error_after_first(outcome: Outcome) -> None:
    lines = _lines(outcome)
    assert outcome.status == 200
    assert lines[0] == {"result": {"name": "s1-0", "count": "0"}}
    assert lines[1]["error"]["code"] == 9
    assert lines[1]["error"]["details"][0]["reason"] == "ECHO_FAILURE"


def _expect_stream_error_first(outcome: Outcome) -> None:
    lines = _lines(outcome)
    assert outcome.status == 400
    assert len(lines) == 1
    assert lines[0]["error"]["code"] == 9


def _expect_gateway_metadata(outcome: Outcome) -> None:
    assert outcome.status == 200
    assert outcome.body["grpcgateway-user-agent"] == ["differential"]
    assert outcome.body["x-forwarded-for"] == ["127.0.0.1"]
    assert outcome.body["tenant"] == ["acme"]
    assert "x-custom" not in outcome.body


KNOWN_DIFFERENCES = [
    (
        Case("overlap precedence", "GET", "/v1/overlap/special"),
        _expect_rpc("GetOverlap", id="special"),
    ),
    (Case("trailing slash", "GET", "/v1/everything/"), _expect_rpc("GetEverything", id="")),
    (
        Case("colon in last segment", "GET", "/v1/everything/x:y"),
        _expect_rpc("GetEverything", id="x:y"),
    ),
    (Case("encoded slash", "GET", "/v1/everything/a%2Fb"), _expect_error(404, 5, "Not Found")),
    (Case("unknown path", "GET", "/v1/nope"), _expect_error(404, 5, "Not Found")),
    (
        Case("known path other method", "DELETE", "/v1/overlap/x"),
        _expect_error(501, 12, "Method Not Allowed"),
    ),
    (
        Case("gateway error body", "POST", "/v1/everything", b'{"id":'),
        _expect_error(400, 3),
    ),
    (
        Case("query does not override path", "GET", "/v1/everything/abc?id=other"),
        _expect_fields(id="abc"),
    ),
    (
        Case("query map entry", "GET", "/v1/everything/q?labels[k]=v"),
        _expect_fields(labels={"k": "v"}),
    ),
    (
        Case("query singular twice", "GET", "/v1/everything/q?display_name=a&display_name=b"),
        _expect_error(400, 3),
    ),
    (
        Case("query empty value dropped", "GET", "/v1/everything/q?int32_value="),
        _expect_fields(int32Value=0),
    ),
    (
        Case("query struct as json", "GET", "/v1/everything/q?struct_value=%7B%22a%22%3A1%7D"),
        _expect_fields(structValue={"a": 1}),
    ),
    (
        Case("query value as json", "GET", "/v1/everything/q?json_value=5"),
        _expect_fields(jsonValue=5),
    ),
    (
        Case("query mask keeps empty path", "GET", "/v1/everything/q?mask=a,,b"),
        _expect_fields(mask="a,,b"),
    ),
    (
        Case(
            "patch derives mask",
            "PATCH",
            "/v1/everything/e1",
            b'{"displayName":"x","nested":{"name":"n"}}',
        ),
        _expect_fields(updateMask="displayName,nested.name"),
    ),
    (Case("www-authenticate", "GET", "/v1/fail/16"), _expect_www_authenticate),
    (Case("stream lines", "GET", "/v1/streams/s1?count=2"), _expect_stream_results),
    (
        Case("stream error after first", "GET", "/v1/streams/s1?count=2&fail_after=1&fail_code=9"),
        _expect_stream_error_after_first,
    ),
    (
        Case("stream error first", "GET", "/v1/streams/s1?count=2&fail_after=0&fail_code=9"),
        _expect_stream_error_first,
    ),
    (
        Case(
            "metadata forwarding",
            "GET",
            "/v1/metadata",
            headers={"user-agent": "differential", "grpc-metadata-tenant": "acme", "x-custom": "1"},
        ),
        _expect_gateway_metadata,
    ),
]


@pytest.mark.parametrize(
    ("case", "check"), KNOWN_DIFFERENCES, ids=[c.name for c, _ in KNOWN_DIFFERENCES]
)
def test_differential_known(stacks: _Stack, case: Case, check: Any):
    gateway = _gateway(stacks, case)
    envoy = _envoy(stacks, case)

    check(gateway)
    assert (envoy.status, envoy.body, envoy.rpc, envoy.headers.get("www-authenticate")) != (
        gateway.status,
        gateway.body,
        gateway.rpc,
        gateway.headers.get("www-authenticate"),
    )


ENVOY_OPTION_CASES = [
    Case("overlap precedence", "GET", "/v1/overlap/special"),
    Case("encoded slash", "GET", "/v1/everything/a%2Fb"),
    Case("query overrides path", "GET", "/v1/everything/abc?id=other"),
]
"""Known differences that a gateway option turns into Envoy's behaviour."""


@pytest.mark.parametrize("case", ENVOY_OPTION_CASES, ids=[c.name for c in ENVOY_OPTION_CASES])
def test_envoy_options_match_envoy(stacks: _Stack, case: Case):
    outcome = _send(stacks.options_url, case, "grpc-metadata-echo-method")
    options = Outcome(outcome.status, _without_nulls(outcome.body), outcome.rpc)
    envoy = _envoy(stacks, case)

    assert (options.status, options.body, options.rpc) == (envoy.status, envoy.body, envoy.rpc)
