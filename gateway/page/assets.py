"""Static files of the tracking page (script, style sheet, icon), read once on first use."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

STATIC_PREFIX = "/track/static/"
"""Path prefix under which the gateway serves the files of ``ASSET_TYPES``."""

ASSET_TYPES = {
    "track.js": "text/javascript; charset=utf-8",
    "track.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""File names in the package's ``static`` folder and the ``Content-Type`` of each."""


@dataclass(frozen=True)
class Asset:
    """One static file and the versioned URL the page links it with."""

    name: str
    """File name, the last segment of the URL path."""
    body: bytes
    """File content."""
    content_type: str
    """``Content-Type`` header value."""

    @property
    def version(self) -> str:
        """First 12 hex digits of the SHA-256 of ``body``; changes whenever the file does."""
        return hashlib.sha256(self.body).hexdigest()[:12]

    @property
    def url(self) -> str:
        """Path and query of the file; the query changes with the content, for caching."""
        return f"{STATIC_PREFIX}{self.name}?v={self.version}"


@functools.cache
def load_assets() -> dict[str, Asset]:
    """Read every file of ``ASSET_TYPES`` from the package, once per process.

    Raises:
        OSError: a file is missing from the installed package.
    """
    folder = resources.files("gateway.page") / "static"
    return {
        name: Asset(name, (folder / name).read_bytes(), content_type)
        for name, content_type in ASSET_TYPES.items()
    }


def find_asset(path: str) -> Asset | None:
    """Return the asset served at the URL ``path`` (without query), or None."""
    if not path.startswith(STATIC_PREFIX):
        return None
    return load_assets().get(path[len(STATIC_PREFIX) :])
