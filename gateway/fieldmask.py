"""Field mask derivation from a PATCH body, as grpc-gateway's ``FieldMaskFromRequestBody``.

Each key of the JSON object becomes a path (proto field names, joined with dots). A
non-empty object under a singular message field adds the paths of its keys instead.
Repeated and map fields stop at the field itself. A ``google.protobuf.Struct`` value adds
the paths of its keys without a schema, and an ``Any`` value needs an ``@type`` key. The
paths come out sorted.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from google.protobuf.descriptor import Descriptor

from gateway.fields import resolve_field_path

_STRUCT = "google.protobuf.Struct"
_ANY = "google.protobuf.Any"


class FieldMaskError(ValueError):
    """Raised when the body has a key that is not a field of the message."""


def field_mask_paths(body: Any, descriptor: Descriptor) -> list[str]:
    """Return the sorted field mask paths that the JSON value ``body`` sets in ``descriptor``.

    Raises:
        FieldMaskError: a key names no field of its message, or an ``Any`` has no ``@type``.
    """
    paths: list[str] = []
    queue: deque[tuple[str, Any, Descriptor | None]] = deque([("", body, descriptor)])
    while queue:
        path, node, message = queue.popleft()
        if isinstance(node, dict) and node:
            for key, value in node.items():
                _visit(paths, queue, path, key, value, message)
        elif path:
            paths.append(path)
    return sorted(paths)


def _visit(
    paths: list[str],
    queue: deque[tuple[str, Any, Descriptor | None]],
    parent_path: str,
    key: str,
    value: Any,
    message: Descriptor | None,
) -> None:
    if message is None:
        raise FieldMaskError(f"JSON object under {parent_path!r} does not match the request type")
    resolved = resolve_field_path(message, [key])
    if resolved is None:
        raise FieldMaskError(f"could not find field {key!r} in {message.full_name}")
    field = resolved[0]
    path = f"{parent_path}.{field.name}" if parent_path else field.name
    nested = field.message_type
    if field.is_repeated:
        paths.append(path)
    elif nested is not None and nested.full_name == _STRUCT:
        paths.extend(_blind_paths(path, value))
    elif nested is not None and nested.full_name == _ANY:
        _check_any(value, path)
        paths.append(path)
    else:
        queue.append((path, value, nested))


def _check_any(value: Any, path: str) -> None:
    if isinstance(value, dict) and "@type" not in value:
        raise FieldMaskError(f"could not find field '@type' in {path!r}")


def _blind_paths(path: str, value: Any) -> list[str]:
    """Paths of a schemaless JSON object: every leaf key, dotted."""
    if not isinstance(value, dict) or not value:
        return [path]
    paths: list[str] = []
    for key, child in value.items():
        paths.extend(_blind_paths(f"{path}.{key}", child))
    return paths
