"""HTML of the tracking page in one language, from ``templates/track.html``.

The page carries no script of its own: the text the script shows (names of statuses,
substatuses and task states) is rendered into hidden ``<data>`` elements, and the
messages of every state are rendered hidden for the script to reveal. Every value put
into the template is HTML-escaped here.
"""

from __future__ import annotations

import functools
import html
import string
from importlib import resources
from urllib.parse import urlencode

from gateway.page.assets import load_assets
from gateway.page.texts import LANGUAGE_NAMES, LANGUAGES, MESSAGES, script_words
from services.shipment.domain import ID_PATTERN

PAGE_PATH = "/track"
"""Path of the tracking page."""

MAX_ECHOED_ID = 200
"""Characters of an invalid ``id`` query value put back into the search box."""


def is_valid_shipment_id(text: str) -> bool:
    """True when ``text`` has the form ShipmentService accepts as a shipment id."""
    return ID_PATTERN.fullmatch(text) is not None


@functools.cache
def _template() -> string.Template:
    source = (resources.files("gateway.page") / "templates" / "track.html").read_text("utf-8")
    return string.Template(source)


def render_page(language: str, query_id: str, refresh_s: float) -> bytes:
    """Return the UTF-8 page in ``language`` for the ``id`` query value ``query_id``.

    An empty ``query_id`` renders the search form alone. An invalid one renders the
    invalid-id message. A valid one makes the script look the shipment up and refresh it
    every ``refresh_s`` seconds while it is in transit.

    Raises:
        KeyError: ``language`` is not one of ``LANGUAGES``.
    """
    valid = is_valid_shipment_id(query_id)
    if valid:
        state = "lookup"
    elif query_id:
        state = "invalid"
    else:
        state = "empty"
    assets = load_assets()
    values = {key: html.escape(text) for key, text in MESSAGES[language].items()}
    values.update(
        lang=language,
        page_path=PAGE_PATH,
        favicon_url=html.escape(assets["favicon.svg"].url),
        css_url=html.escape(assets["track.css"].url),
        js_url=html.escape(assets["track.js"].url),
        language_links=_language_links(language, query_id if valid else ""),
        shipment_id=html.escape(query_id) if valid else "",
        query_id=html.escape(query_id[:MAX_ECHOED_ID]),
        state=state,
        invalid_hidden="" if state == "invalid" else " hidden",
        refresh_s=f"{refresh_s:g}",
        words=_words(language),
    )
    return _template().substitute(values).encode("utf-8")


def _language_links(current: str, shipment_id: str) -> str:
    links = []
    for language in LANGUAGES:
        query = {"lang": language, **({"id": shipment_id} if shipment_id else {})}
        href = html.escape(f"{PAGE_PATH}?{urlencode(query)}")
        current_mark = ' aria-current="true"' if language == current else ""
        name = html.escape(LANGUAGE_NAMES[language])
        links.append(
            f'    <a href="{href}" hreflang="{language}" lang="{language}"{current_mark}>{name}</a>'
        )
    return "\n".join(links)


def _words(language: str) -> str:
    return "\n".join(
        f'    <data value="{html.escape(key)}">{html.escape(word)}</data>'
        for key, word in script_words(language).items()
    )
