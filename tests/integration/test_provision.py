"""The data tier that ``envios up`` and the test fixtures start: real Redis and RabbitMQ."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pika
import pytest
import redis

from ops.provision import ProvisionError, wait_amqp, wait_redis
from ops.stack import Stack
from ops.topology import free_ports, load_topology
from tests.conftest import DataTier, base_environ

LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}
"""127.0.0.1 and ::1 as /proc/net/tcp and /proc/net/tcp6 spell them."""

TCP_LISTEN = "0A"


def listening_addresses(port: int) -> set[str]:
    """Return the hex local addresses that listen on TCP ``port``, from /proc/net/tcp{,6}."""
    addresses = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text(encoding="ascii").splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == TCP_LISTEN and int(hex_port, 16) == port:
                addresses.add(address)
    return addresses


def test_data_tier_redis_ping(data_tier: DataTier) -> None:
    client = redis.Redis.from_url(data_tier.redis_url)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_data_tier_quorum_round_trip(data_tier: DataTier) -> None:
    queue = f"test-provision-{uuid.uuid4().hex}"
    body = uuid.uuid4().bytes
    connection = pika.BlockingConnection(pika.URLParameters(data_tier.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        channel.basic_publish("", queue, body, properties, mandatory=True)
        received = next(channel.consume(queue, inactivity_timeout=10.0))
        method, _, received_body = received
        assert method is not None, "no message within 10 s"
        channel.basic_ack(method.delivery_tag)
        channel.cancel()
        channel.queue_delete(queue)
    finally:
        connection.close()

    assert received_body == body


def test_data_tier_loopback_only(data_tier: DataTier) -> None:
    if data_tier.stack is None:
        pytest.skip("REDIS_URL and AMQP_URL are given, so the tests started no servers")
    stack = data_tier.stack
    topology = stack.topology
    ports = [topology.redis_port, topology.amqp_port, topology.amqp_dist_port, stack.epmd_port]

    for port in ports:
        addresses = listening_addresses(port)
        assert addresses, f"nothing listens on port {port}"
        assert addresses <= LOOPBACK_HEX, f"port {port} listens on {addresses}"


def test_stack_second_up_reports_up(data_tier: DataTier, tmp_path: Path) -> None:
    environ = {**base_environ(), "REDIS_URL": data_tier.redis_url, "AMQP_URL": data_tier.amqp_url}
    stack = Stack(load_topology().with_free_ports(), tmp_path, environ, data_only=True)
    try:
        assert stack.up(timeout_s=30.0) is True
        pid = stack.supervisord_pid()

        assert stack.up(timeout_s=30.0) is False
        assert stack.supervisord_pid() == pid
        assert stack.status()["up"] is True
    finally:
        stopped = stack.down()

    assert stopped is True
    assert stack.supervisord_pid() is None
    assert stack.down() is False


def test_stack_restarts_stopped_redis(data_tier: DataTier) -> None:
    if data_tier.stack is None:
        pytest.skip("REDIS_URL and AMQP_URL are given, so the tests started no servers")
    stack = data_tier.stack
    old_pid = stack.pid_of("redis")

    stack.stop_process("redis")
    assert stack.pid_of("redis") is None
    stack.start_process("redis")
    stack.wait_ready(["redis"], timeout_s=10.0)

    assert stack.pid_of("redis") not in (None, old_pid)


def test_wait_redis_times_out() -> None:
    url = f"redis://127.0.0.1:{free_ports(1)[0]}/0"
    started = time.monotonic()

    with pytest.raises(ProvisionError, match="did not reply to PING"):
        wait_redis(url, timeout_s=0.5)

    assert time.monotonic() - started < 5.0


def test_wait_amqp_times_out() -> None:
    url = f"amqp://guest:secret@127.0.0.1:{free_ports(1)[0]}/%2F"

    with pytest.raises(ProvisionError, match="guest:\\*\\*\\*@") as error_info:
        wait_amqp(url, timeout_s=0.5)

    assert "secret" not in str(error_info.value)
