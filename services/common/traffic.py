"""The operator's traffic split between sites, as stored in Envoy's runtime.

``TRAFFIC_RUNTIME_KEY`` is the percentage (0-100) of gRPC calls that Envoy sends to the
secondary site first. ``envios traffic shift`` sets it through Envoy's admin API, and
task workers read it there to decide which site's workers take tasks first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

TRAFFIC_RUNTIME_KEY = "envios.traffic.secondary_percent"
"""Runtime key: percentage (0-100) of gRPC calls sent to the secondary site first.

0 is normal operation. 100 is a full manual failover. Either way, calls fall back to the
other site when the first one has no healthy host.
"""


def runtime_entry(document: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """Return the key's effective value and its value per layer from admin ``/runtime`` JSON.

    The effective value is ``""`` when no layer sets the key, and so is the value of each
    layer that does not set it.
    """
    entry = document.get("entries", {}).get(TRAFFIC_RUNTIME_KEY, {})
    names = document.get("layers", [])
    values = entry.get("layer_values", [""] * len(names))
    return str(entry.get("final_value", "")), dict(zip(names, values, strict=False))


def effective_percent(value: str) -> int:
    """Return the percentage of calls sent to the secondary first for a runtime value.

    A value that is not a whole number from 0 to 100 counts as 0, the rendered default.
    ``envios traffic shift`` sets only whole numbers from 0 to 100.
    """
    text = value.strip()
    if not text.isdigit():
        return 0
    percent = int(text)
    return percent if percent <= 100 else 0


async def read_secondary_percent(client: httpx.AsyncClient, admin_url: str) -> int:
    """Read the share of calls sent to the secondary site first from Envoy's admin API.

    Raises:
        httpx.HTTPError: the admin API is unreachable or returned an error status.
        ValueError: the admin API returned something other than JSON.
    """
    response = await client.get(f"{admin_url}/runtime")
    response.raise_for_status()
    final, _ = runtime_entry(response.json())
    return effective_percent(final)
