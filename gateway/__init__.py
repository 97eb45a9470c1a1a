"""HTTP/JSON facade over the envios gRPC services, with grpc-gateway v2 semantics.

``create_app(config)`` returns the ASGI application; ``python -m gateway`` serves it.
"""

from gateway.app import GatewayApp, create_app
from gateway.config import GatewayConfig

__all__ = ["GatewayApp", "GatewayConfig", "create_app"]
