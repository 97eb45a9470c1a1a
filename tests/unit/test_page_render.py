"""HTML of the tracking page and its static files, rendered without a server."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib import resources

import pytest

from gateway.page.assets import ASSET_TYPES, find_asset, load_assets
from gateway.page.render import is_valid_shipment_id, render_page
from gateway.page.texts import MESSAGES, STATUS_NAMES


class TagCollector(HTMLParser):
    """Collects every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]

    def by_id(self, element_id: str) -> dict[str, str | None]:
        matches = [attrs for _, attrs in self.tags if attrs.get("id") == element_id]
        assert len(matches) == 1, element_id
        return matches[0]


def parse(page: bytes) -> TagCollector:
    collector = TagCollector()
    collector.feed(page.decode("utf-8"))
    return collector


def test_render_valid_id() -> None:
    page = render_page("es", "order-42", 10.0)
    tags = parse(page)

    assert tags.find("html")[0]["lang"] == "es"
    assert tags.by_id("tracking")["data-shipment-id"] == "order-42"
    assert tags.by_id("tracking")["data-state"] == "lookup"
    assert tags.by_id("tracking")["data-refresh-s"] == "10"
    assert "hidden" in tags.by_id("state-invalid")
    assert tags.by_id("shipment-id")["value"] == "order-42"
    assert MESSAGES["es"]["title"] in page.decode()


def test_render_invalid_id_escaped() -> None:
    page = render_page("en", '"><script>alert(1)</script>', 10.0)
    tags = parse(page)
    text = page.decode()

    assert "<script>alert" not in text
    assert tags.by_id("tracking")["data-shipment-id"] == ""
    assert tags.by_id("tracking")["data-state"] == "invalid"
    assert "hidden" not in tags.by_id("state-invalid")
    assert tags.by_id("shipment-id")["value"] == '"><script>alert(1)</script>'
    assert MESSAGES["en"]["invalid_id"] in text


def test_render_without_id() -> None:
    tags = parse(render_page("en", "", 10.0))

    assert tags.by_id("tracking")["data-state"] == "empty"
    assert "hidden" in tags.by_id("state-invalid")


def test_render_language_links() -> None:
    tags = parse(render_page("en", "order-42", 10.0))
    links = {attrs["hreflang"]: attrs for attrs in tags.find("a")}

    assert links["es"]["href"] == "/track?lang=es&id=order-42"
    assert links["en"]["href"] == "/track?lang=en&id=order-42"
    assert links["en"].get("aria-current") == "true"
    assert "aria-current" not in links["es"]


def test_render_words_for_script() -> None:
    tags = parse(render_page("es", "order-42", 10.0))
    values = {attrs["value"] for attrs in tags.find("data")}

    assert {f"status.{code}" for code in STATUS_NAMES["es"]} <= values
    assert "task.SUCCEEDED" in values
    assert "hidden" in tags.by_id("words")


def test_render_no_inline_code() -> None:
    tags = parse(render_page("es", "order-42", 10.0))

    for attrs in tags.find("script"):
        assert attrs.get("src"), "every script must be a same-origin file"
    assert tags.find("style") == []
    for _, attrs in tags.tags:
        assert "style" not in attrs
        assert not any(name.startswith("on") for name in attrs)


def test_render_links_served_assets() -> None:
    tags = parse(render_page("es", "order-42", 10.0))
    urls = [attrs["src"] for attrs in tags.find("script")]
    urls += [attrs["href"] for attrs in tags.find("link")]

    assert len(urls) == 3
    for url in urls:
        assert url is not None
        path, _, query = url.partition("?")
        asset = find_asset(path)
        assert asset is not None, url
        assert query == f"v={asset.version}"


def test_assets_local_only() -> None:
    template = (resources.files("gateway.page") / "templates" / "track.html").read_bytes()
    for body in [template, *(asset.body for asset in load_assets().values())]:
        # The SVG namespace is a name, not a resource the browser loads.
        text = body.decode("utf-8").replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text)
        assert "eval(" not in text
        assert "innerHTML" not in text


def test_assets_types() -> None:
    assets = load_assets()

    assert set(assets) == set(ASSET_TYPES)
    assert assets["track.js"].content_type.startswith("text/javascript")
    assert find_asset("/track/static/../render.py") is None
    assert find_asset("/track/other.js") is None


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("e95f655fc4bb105e8915ab28d7bd0ec6", True),
        ("a.b_c-d", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("-leading", False),
        ("with space", False),
        ("ñandú", False),
    ],
)
def test_valid_shipment_id_cases(text: str, valid: bool) -> None:
    assert is_valid_shipment_id(text) is valid
