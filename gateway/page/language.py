"""Choice of the tracking page's language from the query, a cookie and ``Accept-Language``."""

from __future__ import annotations

from gateway.page.texts import LANGUAGES

FALLBACK_LANGUAGE = "en"
"""Language of the page when the request names none of ``LANGUAGES``."""

LANGUAGE_COOKIE = "envios_lang"
"""Cookie that keeps the language picked with the page's language switch."""


def parse_accept_language(header: str) -> list[tuple[str, float]]:
    """Return the ``(primary subtag, q)`` pairs of an ``Accept-Language`` value, best first.

    Tags are lower-cased and cut to their primary subtag (``es-AR`` becomes ``es``). A
    range with a malformed ``q`` is skipped, and ties keep the header's order.
    """
    ranges: list[tuple[str, float]] = []
    for item in header.split(","):
        tag, _, params = item.partition(";")
        tag = tag.strip().lower()
        quality = _quality(params)
        if tag and quality is not None and quality > 0:
            ranges.append((tag.split("-")[0], quality))
    return sorted(ranges, key=lambda pair: -pair[1])


def _quality(params: str) -> float | None:
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value)
            except ValueError:
                return None
            return quality if 0 <= quality <= 1 else None
    return 1.0


def negotiate_language(accept_language: str) -> str:
    """Return the first of ``LANGUAGES`` that ``accept_language`` ranks best.

    ``*`` matches the first language (Spanish); a header that names none of them, or is
    empty, gives ``FALLBACK_LANGUAGE``.
    """
    for tag, _ in parse_accept_language(accept_language):
        if tag in LANGUAGES:
            return tag
        if tag == "*":
            return LANGUAGES[0]
    return FALLBACK_LANGUAGE


def choose_language(query: str | None, cookie: str | None, accept_language: str) -> str:
    """Return the page's language: the ``lang`` query value, else the cookie, else the header.

    A query or cookie value that is not one of ``LANGUAGES`` is ignored.
    """
    for picked in (query, cookie):
        if picked is not None and picked in LANGUAGES:
            return picked
    return negotiate_language(accept_language)
