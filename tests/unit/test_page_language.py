"""Language choice and text tables of the tracking page."""

from __future__ import annotations

import pytest
from envios.task.v1 import task_pb2

from gateway.page.language import choose_language, negotiate_language, parse_accept_language
from gateway.page.texts import (
    LANGUAGE_NAMES,
    LANGUAGES,
    MESSAGES,
    STATUS_NAMES,
    SUBSTATUS_NAMES,
    TASK_STATE_NAMES,
    script_words,
)
from services.shipment.domain import STATUSES


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("es-AR,es;q=0.9,en;q=0.8", "es"),
        ("en-US,en;q=0.9,es;q=0.5", "en"),
        ("en;q=0.3, es;q=0.8", "es"),
        ("pt-BR, es;q=0.7, en;q=0.6", "es"),
        ("fr-FR, de;q=0.5", "en"),
        ("", "en"),
        ("*", "es"),
        ("es;q=0, en", "en"),
        ("es;q=abc, en;q=0.5", "en"),
        ("es;q=2, en;q=0.5", "en"),
        ("ES-mx", "es"),
    ],
)
def test_negotiate_language_cases(header: str, expected: str) -> None:
    assert negotiate_language(header) == expected


def test_parse_accept_language_order() -> None:
    ranges = parse_accept_language("en;q=0.5, es-CL, fr;q=0.5")

    assert ranges == [("es", 1.0), ("en", 0.5), ("fr", 0.5)]


def test_choose_language_query_wins() -> None:
    assert choose_language("en", "es", "es-ES") == "en"


def test_choose_language_cookie_over_header() -> None:
    assert choose_language(None, "es", "en-US") == "es"


def test_choose_language_ignores_unknown_picks() -> None:
    assert choose_language("fr", "de", "es-ES") == "es"
    assert choose_language("", None, "en-GB") == "en"


def test_texts_same_keys_in_every_language() -> None:
    for table in (MESSAGES, STATUS_NAMES, SUBSTATUS_NAMES, TASK_STATE_NAMES):
        assert set(table) == set(LANGUAGES)
        first = set(table[LANGUAGES[0]])
        for language in LANGUAGES:
            assert set(table[language]) == first, language
    assert set(LANGUAGE_NAMES) == set(LANGUAGES)


def test_texts_name_every_status() -> None:
    for language in LANGUAGES:
        assert set(STATUS_NAMES[language]) == set(STATUSES), language


def test_texts_name_every_task_state() -> None:
    states = set(task_pb2.Task.State.keys()) - {"STATE_UNSPECIFIED"}

    for language in LANGUAGES:
        assert set(TASK_STATE_NAMES[language]) == states, language


def test_texts_translated() -> None:
    for key in MESSAGES["es"]:
        if key != "none":
            assert MESSAGES["es"][key] != MESSAGES["en"][key], key
    assert STATUS_NAMES["es"]["shipped"] == "En camino"
    assert STATUS_NAMES["en"]["shipped"] == "On its way"


def test_script_words_keys() -> None:
    words = script_words("es")

    assert words["status.delivered"] == "Entregado"
    assert words["substatus.printed"] == "Etiqueta impresa"
    assert words["task.RUNNING"] == "En curso"
    assert words["note.late"] == MESSAGES["es"]["note_late"]
    with pytest.raises(KeyError):
        script_words("fr")
