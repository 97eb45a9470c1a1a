"""Benchmark: the time the gateway's own code takes per request, in one process.

The gateway application serves the requests of ``benchmarks/gateway_vs_envoy.py`` (a
status read and a PATCH with a JSON body) through its ASGI interface, with a stub
upstream that returns the request message as the response. No server, socket or gRPC
call is involved, so the numbers are the Python work the gateway adds around a call.
The script also times the steps of the PATCH alone, and the planned JSON body parser
against ``json_format.ParseDict`` on the same document.

    .venv/bin/python benchmarks/gateway_request_cost.py --count 20000

This is a measurement, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway_vs_envoy import REQUESTS  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from google.protobuf.message import Message  # noqa: E402

from gateway.app import GatewayApp  # noqa: E402
from gateway.bindings import Binding, load_source_bindings  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from gateway.marshal import dumps, response_value  # noqa: E402
from gateway.metrics import MetricsMiddleware  # noqa: E402
from gateway.request import build_request, decode_json  # noqa: E402
from gateway.unmarshal import parse_dict  # noqa: E402
from gateway.upstream import UnaryResult  # noqa: E402
from tests.integration.gateway_harness import TEST_SERVICE, load_test_source  # noqa: E402

HEADERS = [
    (b"host", b"127.0.0.1:8080"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
    (b"content-type", b"application/json"),
]


class EchoUpstream:
    """Upstream stub whose unary calls return the request message at once."""

    def open(self) -> None:
        pass

    async def unary(
        self, binding: Binding, request: Message, metadata: Any, timeout_s: float
    ) -> UnaryResult:
        return UnaryResult(response=request)


def _scope(method: str, target: str, body: bytes | None) -> dict[str, Any]:
    path, _, query = target.partition("?")
    headers = list(HEADERS)
    if body is not None:
        headers.append((b"content-length", str(len(body)).encode()))
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "http_version": "1.1",
        "scheme": "http",
        "extensions": {},
    }


async def _serve(app: MetricsMiddleware, name: str, count: int) -> float:
    """Serve request ``name`` ``count`` times and return the microseconds per request."""
    method, target, body = REQUESTS[name]
    statuses: list[int] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": body or b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    began = time.perf_counter()
    for _ in range(count):
        await app(_scope(method, target, body), receive, send)
    elapsed = time.perf_counter() - began
    if set(statuses) != {200}:
        raise RuntimeError(f"{name}: unexpected statuses {sorted(set(statuses))}")
    return elapsed / count * 1e6


def _per_call_us(function: Callable[[], object], count: int) -> float:
    began = time.perf_counter()
    for _ in range(count):
        function()
    return (time.perf_counter() - began) / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="requests per measurement")
    args = parser.parse_args()

    descriptor_set, source = load_test_source(Path(tempfile.mkdtemp(prefix="gateway-cost-")))
    config = GatewayConfig.from_env({"ENVIOS_GATEWAY_DESCRIPTOR_SET": str(descriptor_set)})
    bindings = load_source_bindings(source, [TEST_SERVICE])
    app = MetricsMiddleware(GatewayApp(config, bindings, upstream=EchoUpstream()))  # type: ignore[arg-type]

    print(f"{args.count} requests per row, microseconds per request")
    for name in REQUESTS:
        asyncio.run(_serve(app, name, min(args.count, 1000)))
        print(f"{name:28} {asyncio.run(_serve(app, name, args.count)):8.1f}")

    _, _, patch_body = REQUESTS["patch"]
    assert patch_body is not None
    binding = next(
        b for b in bindings if b.http_method == "PATCH" and b.template.source.startswith("/v1/")
    )
    params = {"everything.id": "s1"}
    document = {binding.body: decode_json(patch_body)}
    request = build_request(binding, patch_body, params, "")

    def planned() -> None:
        parse_dict(document, binding.request_class())

    def reference() -> None:
        json_format.ParseDict(document, binding.request_class(), ignore_unknown_fields=True)

    rows = {
        "patch: build_request": lambda: build_request(binding, patch_body, params, ""),
        "patch: JSON output": lambda: dumps(response_value(request, "", binding.pool)),
        "patch body: planned parser": planned,
        "patch body: ParseDict": reference,
    }
    timings = {label: _per_call_us(function, args.count) for label, function in rows.items()}
    for label, microseconds in timings.items():
        print(f"{label:28} {microseconds:8.1f}")
    ratio = timings["patch body: ParseDict"] / timings["patch body: planned parser"]
    print(f"planned parser is {ratio:.1f}x faster than ParseDict on the PATCH body")
    return 0


if __name__ == "__main__":
    sys.exit(main())
