"""The public shipment tracking page, served by the gateway next to the JSON API.

``GET /track`` returns the page in Spanish or English (``lang`` query value, else the
``envios_lang`` cookie, else ``Accept-Language``); ``GET /track?id=<shipment id>`` shows
that shipment. The page's script reads the shipment only through the public JSON routes
(``/api/status/shipments/{id}``, ``/v1/shipments/{id}``, ``/api/status/tasks/{id}``).
``GET /`` redirects to ``/track``.
"""

from gateway.page.handler import SECURITY_HEADERS, TrackingPage
from gateway.page.render import PAGE_PATH

__all__ = ["PAGE_PATH", "SECURITY_HEADERS", "TrackingPage"]
