"""The tracking page's text in each language it serves: labels, messages and names.

Every language has the same keys. Status and task state names are the words a buyer
uses, not the API's codes. The page shows a substatus without an entry as its code with
the underscores replaced by spaces.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("es", "en")
"""Languages of the page, in the order preferred when a browser ranks them equally."""

LANGUAGE_NAMES = {"es": "Español", "en": "English"}
"""Name of each language in that language, shown on the language switch."""

MESSAGES: Mapping[str, Mapping[str, str]] = {
    "es": {
        "title": "Seguimiento de envíos",
        "heading": "¿Dónde está mi envío?",
        "language_switch": "Idioma",
        "id_label": "Número de envío",
        "id_hint": "Lo encuentras en el correo de confirmación de tu compra.",
        "search": "Buscar",
        "loading": "Buscando tu envío…",
        "invalid_id": (
            "Ese número de envío no es válido. Usa de 1 a 64 letras, números, puntos, "
            "guiones o guiones bajos, empezando por una letra o un número."
        ),
        "not_found": "No encontramos ningún envío con ese número. Revisa que esté bien escrito.",
        "unavailable": (
            "No podemos consultar el envío en este momento. Volveremos a intentarlo solos "
            "en unos segundos."
        ),
        "degraded": (
            "Estamos mostrando los datos desde nuestro respaldo, así que la página puede "
            "tardar un poco más. La información está al día."
        ),
        "no_script": "Esta página necesita JavaScript para mostrar el estado del envío.",
        "shipment_heading": "Envío",
        "status_label": "Estado",
        "substatus_label": "Detalle",
        "tracking_label": "Número de seguimiento",
        "status_time_label": "Desde",
        "none": "—",
        "refresh_note": "Esta página se actualiza sola mientras el envío está en camino.",
        "timeline_heading": "Historial",
        "tasks_heading": "Tareas sobre este envío",
        "note_late": "llegó con retraso",
        "note_not_applied": "registrado, no cambió el estado",
    },
    "en": {
        "title": "Shipment tracking",
        "heading": "Where is my shipment?",
        "language_switch": "Language",
        "id_label": "Shipment number",
        "id_hint": "You will find it in the confirmation email of your purchase.",
        "search": "Search",
        "loading": "Looking for your shipment…",
        "invalid_id": (
            "That shipment number is not valid. Use 1 to 64 letters, digits, dots, hyphens "
            "or underscores, starting with a letter or a digit."
        ),
        "not_found": "We found no shipment with that number. Check that it is spelled right.",
        "unavailable": (
            "We cannot look up the shipment right now. We will try again by ourselves in a "
            "few seconds."
        ),
        "degraded": (
            "We are showing the data from our backup, so the page may be a little slower. "
            "The information is up to date."
        ),
        "no_script": "This page needs JavaScript to show the status of the shipment.",
        "shipment_heading": "Shipment",
        "status_label": "Status",
        "substatus_label": "Detail",
        "tracking_label": "Tracking number",
        "status_time_label": "Since",
        "none": "—",
        "refresh_note": "This page updates itself while the shipment is on its way.",
        "timeline_heading": "History",
        "tasks_heading": "Tasks on this shipment",
        "note_late": "arrived late",
        "note_not_applied": "recorded, did not change the status",
    },
}
"""Labels and messages of the page, by language and key."""

STATUS_NAMES: Mapping[str, Mapping[str, str]] = {
    "es": {
        "pending": "Pedido recibido",
        "handling": "En preparación",
        "ready_to_ship": "Listo para enviar",
        "shipped": "En camino",
        "delivered": "Entregado",
        "not_delivered": "No entregado",
        "cancelled": "Cancelado",
    },
    "en": {
        "pending": "Order received",
        "handling": "Being prepared",
        "ready_to_ship": "Ready to ship",
        "shipped": "On its way",
        "delivered": "Delivered",
        "not_delivered": "Not delivered",
        "cancelled": "Cancelled",
    },
}
"""Shipment status names, by language and API status code."""

SUBSTATUS_NAMES: Mapping[str, Mapping[str, str]] = {
    "es": {
        "picking": "Preparando los productos",
        "ready_to_print": "Etiqueta lista para imprimir",
        "printed": "Etiqueta impresa",
        "in_transit": "En tránsito",
        "out_for_delivery": "En reparto",
        "waiting_for_withdrawal": "Listo para retirar",
    },
    "en": {
        "picking": "Picking the items",
        "ready_to_print": "Label ready to print",
        "printed": "Label printed",
        "in_transit": "In transit",
        "out_for_delivery": "Out for delivery",
        "waiting_for_withdrawal": "Ready for pickup",
    },
}
"""Names of the common substatuses, by language and substatus code."""

TASK_STATE_NAMES: Mapping[str, Mapping[str, str]] = {
    "es": {
        "QUEUED": "En espera",
        "RUNNING": "En curso",
        "RETRYING": "Reintentando",
        "SUCCEEDED": "Completada",
        "FAILED": "Falló",
        "CANCELLED": "Cancelada",
    },
    "en": {
        "QUEUED": "Waiting",
        "RUNNING": "In progress",
        "RETRYING": "Retrying",
        "SUCCEEDED": "Completed",
        "FAILED": "Failed",
        "CANCELLED": "Cancelled",
    },
}
"""Task state names, by language and ``envios.task.v1.Task.State`` name."""


def script_words(language: str) -> dict[str, str]:
    """Return the words the page's script looks up, keyed ``<kind>.<code>``.

    Kinds are ``status``, ``substatus``, ``task`` and ``note``.

    Raises:
        KeyError: ``language`` is not one of ``LANGUAGES``.
    """
    words = {f"status.{code}": name for code, name in STATUS_NAMES[language].items()}
    words.update({f"substatus.{code}": name for code, name in SUBSTATUS_NAMES[language].items()})
    words.update({f"task.{code}": name for code, name in TASK_STATE_NAMES[language].items()})
    messages = MESSAGES[language]
    words["note.late"] = messages["note_late"]
    words["note.not_applied"] = messages["note_not_applied"]
    words["none"] = messages["none"]
    return words
