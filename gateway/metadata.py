"""HTTP headers to gRPC metadata and back, as grpc-gateway v2's defaults do it.

Request side (grpc-gateway ``DefaultHeaderMatcher`` and ``annotateContext``):

- the permanent HTTP headers below travel as ``grpcgateway-<name>``;
- ``Authorization`` also travels unprefixed as ``authorization``;
- ``Grpc-Metadata-<key>`` travels as ``<key>``; a ``-bin`` key is base64-decoded first;
- ``X-Forwarded-Host`` is the incoming one or else the ``Host`` header;
  ``X-Forwarded-For`` is the incoming list plus the client address;
- ``Grpc-Timeout`` (``<integer><H|M|S|m|u|n>``) sets the call deadline.

In addition to grpc-gateway, ``traceparent`` and ``tracestate`` travel as they are, so a
W3C trace continues through the gateway without a tracing library here.

Response side: header metadata becomes ``Grpc-Metadata-<key>`` headers and, when the
request sent ``TE: trailers``, trailer metadata becomes ``Grpc-Trailer-<key>`` fields.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence

from gateway.errors import invalid_argument

PERMANENT_HEADERS = frozenset(
    {
        "accept",
        "accept-charset",
        "accept-language",
        "accept-ranges",
        "authorization",
        "cache-control",
        "content-type",
        "cookie",
        "date",
        "expect",
        "from",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-schedule-tag-match",
        "if-unmodified-since",
        "max-forwards",
        "origin",
        "pragma",
        "referer",
        "user-agent",
        "via",
        "warning",
    }
)
"""IANA permanent request headers grpc-gateway forwards with the ``grpcgateway-`` prefix.

``Host`` is on grpc-gateway's list too, but Go's server removes it from the header map,
so it only reaches the service as ``x-forwarded-host``. This gateway does the same.
"""

METADATA_PREFIX = "grpcgateway-"
METADATA_HEADER_PREFIX = "grpc-metadata-"
TRAILER_HEADER_PREFIX = "grpc-trailer-"
TRACE_HEADERS = ("traceparent", "tracestate")

_TIMEOUT_UNITS_S = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_VALID_KEY = re.compile(r"[0-9a-z._-]+")
# Keys the gRPC library sets itself or rejects when an application sends them.
_RESERVED_KEYS = frozenset({"content-type", "te", "user-agent", "host", "connection"})

Metadata = list[tuple[str, str | bytes]]


def parse_grpc_timeout(value: str) -> float:
    """Return the seconds of a ``Grpc-Timeout`` header value such as ``10S`` or ``500m``.

    Raises:
        GatewayError: INVALID_ARGUMENT for a malformed value.
    """
    unit = _TIMEOUT_UNITS_S.get(value[-1:])
    digits = value[:-1]
    if len(value) < 2 or unit is None or not digits.isascii() or not digits.isdigit():
        raise invalid_argument(
            f"invalid Grpc-Timeout header {value!r}: "
            "expected an integer followed by one unit of H, M, S, m, u, n"
        )
    return int(digits) * unit


def request_metadata(headers: Sequence[tuple[str, str]], client_host: str | None) -> Metadata:
    """Return the gRPC metadata for lower-case HTTP request headers.

    Raises:
        GatewayError: INVALID_ARGUMENT for a ``-bin`` header that is not base64.
    """
    metadata: Metadata = []
    for name, value in headers:
        if name == "authorization":
            metadata.append(("authorization", value))
        if name in TRACE_HEADERS:
            metadata.append((name, value))
        entry = _forwarded_entry(name, value)
        if entry is not None:
            metadata.append(entry)
    metadata.extend(_forwarding_entries(headers, client_host))
    return metadata


def _forwarded_entry(name: str, value: str) -> tuple[str, str | bytes] | None:
    if name in PERMANENT_HEADERS:
        key = METADATA_PREFIX + name
    elif name.startswith(METADATA_HEADER_PREFIX):
        key = name[len(METADATA_HEADER_PREFIX) :]
    else:
        return None
    if not _VALID_KEY.fullmatch(key) or key.startswith("grpc-") or key in _RESERVED_KEYS:
        return None
    if key.endswith("-bin"):
        return key, _decode_binary(name, value)
    # Printable ASCII (0x20 to 0x7E) only, as gRPC requires of text metadata values.
    if not (value.isascii() and value.isprintable()):
        return None
    return key, value


def _decode_binary(name: str, value: str) -> bytes:
    padded = value + "=" * (-len(value) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument(f"invalid binary header {name}: not base64") from None


def _forwarding_entries(headers: Sequence[tuple[str, str]], client_host: str | None) -> Metadata:
    values = dict(headers)
    entries: Metadata = []
    host = values.get("x-forwarded-host") or values.get("host")
    if host:
        entries.append(("x-forwarded-host", host))
    forwarded = [v for n, v in headers if n == "x-forwarded-for"]
    if client_host:
        forwarded.append(client_host)
    if forwarded:
        entries.append(("x-forwarded-for", ", ".join(forwarded)))
    return entries


def accepts_trailers(headers: Sequence[tuple[str, str]]) -> bool:
    """True when the request's ``TE`` header lists ``trailers``."""
    return any(
        name == "te" and "trailers" in (part.strip().lower() for part in value.split(","))
        for name, value in headers
    )


def response_headers(header_metadata: Iterable[tuple[str, str | bytes]]) -> list[tuple[str, str]]:
    """Return ``Grpc-Metadata-<key>`` headers for gRPC header metadata.

    Binary (``-bin``) values are base64-encoded; ``grpc-`` keys belong to the gRPC library
    and are not forwarded.
    """
    return prefixed_fields(METADATA_HEADER_PREFIX, header_metadata)


def trailer_fields(trailer_metadata: Iterable[tuple[str, str | bytes]]) -> list[tuple[str, str]]:
    """Return ``Grpc-Trailer-<key>`` fields for gRPC trailer metadata."""
    return prefixed_fields(TRAILER_HEADER_PREFIX, trailer_metadata)


def prefixed_fields(
    prefix: str, metadata: Iterable[tuple[str, str | bytes]]
) -> list[tuple[str, str]]:
    headers = []
    for key, value in metadata:
        if key.startswith("grpc-") or key.startswith(":"):
            continue
        text = base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
        headers.append((prefix + key, text))
    return headers
