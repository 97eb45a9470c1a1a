"""Run one ShipmentService replica: ``python -m services.shipment``."""

from services.common.runner import run_service
from services.shipment.app import ShipmentApp, ShipmentConfig

if __name__ == "__main__":
    run_service("shipment", ShipmentConfig.from_env, ShipmentApp)
