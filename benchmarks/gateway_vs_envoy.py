"""Benchmark: the Python gateway versus Envoy's gRPC-JSON transcoder on the same backend.

One run starts the echo backend of the gateway tests (its own process), the gateway
(``python -m gateway`` on the test descriptor set) and an Envoy with the transcoder on the
same descriptor set, both calling that backend. h2load then drives each transcoder in
turn over HTTP/1.1 with the same connections, duration and two requests:

- ``read``: ``GET /v1/everything/s1?display_name=x`` (a status read);
- ``patch``: ``PATCH /v1/everything/s1`` with a JSON body, which the gateway turns into
  an update with a derived field mask.

Throughput and latency percentiles come from h2load's per-request log. ``--profile``
also samples the gateway with py-spy during its read run and prints the hottest frames.

    .venv/bin/python benchmarks/gateway_vs_envoy.py --duration 10 --connections 32

This is a measurement, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from ops.topology import HOST, free_ports  # noqa: E402
from tests.integration.gateway_harness import (  # noqa: E402
    EchoBackend,
    TranscoderEnvoy,
    load_test_source,
)

PATCH_BODY = b'{"displayName":"renamed","nested":{"name":"n","count":"3"},"tags":["a","b"]}'
REQUESTS = {
    "read": ("GET", "/v1/everything/s1?display_name=x", None),
    "patch": ("PATCH", "/v1/everything/s1", PATCH_BODY),
}


def _backend_main(directory: Path, port: int) -> None:
    """Serve the echo backend until killed (runs in the child process)."""

    async def serve() -> None:
        _, source = load_test_source(directory)
        backend = EchoBackend(source)
        await backend.start(f"{HOST}:{port}")
        await asyncio.Event().wait()

    asyncio.run(serve())


def _wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not respond within {timeout_s} s")


def _h2load(url: str, name: str, args: argparse.Namespace, log: Path) -> dict[str, float]:
    command = [
        *_h2load_command(url, name, args, log.with_suffix(".body")),
        "-D",
        str(args.duration),
        "--warm-up-time",
        "2",
        "--log-file",
        str(log),
    ]
    subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    return _summarize(log, args.duration)


def _h2load_command(
    url: str, name: str, args: argparse.Namespace, body_path: Path | None = None
) -> list[str]:
    """Return h2load's arguments for request ``name``, without the duration options."""
    method, path, body = REQUESTS[name]
    command = ["h2load", "--h1", "-c", str(args.connections), "-H", f":method: {method}"]
    if body is not None:
        data = body_path or Path(tempfile.mkdtemp(prefix="gateway-bench-")) / f"{name}.body"
        data.write_bytes(body)
        command += ["-d", str(data), "-H", "content-type: application/json"]
    return [*command, url + path]


def _summarize(log: Path, duration_s: float) -> dict[str, float]:
    latencies_us: list[int] = []
    statuses: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        _, status, latency = line.split("\t")
        statuses[status] += 1
        latencies_us.append(int(latency))
    latencies_us.sort()
    quantiles = statistics.quantiles(latencies_us, n=100)
    ok = statuses.get("200", 0)
    return {
        "rps": ok / duration_s,
        "p50_ms": quantiles[49] / 1000,
        "p99_ms": quantiles[98] / 1000,
        "non_200": sum(statuses.values()) - ok,
    }


def _profile(pid: int, seconds: int, directory: Path) -> str:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = directory / "gateway.pyspy.txt"
    subprocess.run(
        [py_spy, "record", "-p", str(pid), "-d", str(seconds), "-f", "raw", "-o", str(out)],
        capture_output=True,
        check=True,
        timeout=seconds + 60,
    )
    return _hot_frames(out)


def _hot_frames(path: Path, top: int = 25) -> str:
    """Return the frames with the most samples anywhere on the stack (inclusive counts)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        for frame in set(stack.split(";")):
            inclusive[frame] += count
    rows = [f"{100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per h2load run")
    parser.add_argument("--connections", type=int, default=32, help="h2load connections")
    parser.add_argument("--profile", action="store_true", help="sample the gateway with py-spy")
    parser.add_argument(
        "--profile-request",
        choices=sorted(REQUESTS),
        default="read",
        help="request to drive while profiling (default read)",
    )
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    descriptor_set, _ = load_test_source(directory)
    backend_port, gateway_port = free_ports(2)
    backend_address = f"{HOST}:{backend_port}"
    processes: list[subprocess.Popen[bytes]] = []
    envoy = TranscoderEnvoy(descriptor_set, backend_address, directory)
    try:
        processes.append(_start_backend(directory, backend_port))
        gateway = _start_gateway(descriptor_set, backend_address, gateway_port, directory)
        processes.append(gateway)
        envoy.start()
        gateway_url = f"http://{HOST}:{gateway_port}"
        _wait_http(gateway_url + "/healthz")
        _wait_http(envoy.url + "/v1/everything/warm")
        _wait_http(gateway_url + "/v1/everything/warm")
        results: dict[tuple[str, str], dict[str, float]] = {}
        for name in REQUESTS:
            for target, url in (("gateway", gateway_url), ("envoy", envoy.url)):
                results[(target, name)] = _h2load(
                    url, name, args, directory / f"{target}-{name}.log"
                )
        _print(results, args)
        if args.profile:
            name = args.profile_request
            print(f"\nGateway profile during a {name} run (inclusive samples, py-spy):")
            runner = subprocess.Popen(
                [*_h2load_command(gateway_url, name, args), "-D", str(args.duration + 4)],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(2)
            print(_profile(gateway.pid, args.duration, directory))
            runner.wait(timeout=args.duration + 60)
    finally:
        envoy.stop()
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
    return 0


def _start_backend(directory: Path, port: int) -> subprocess.Popen[bytes]:
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[3]); "
        "from benchmarks.gateway_vs_envoy import _backend_main; "
        "_backend_main(Path(sys.argv[1]), int(sys.argv[2]))"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(directory), str(port), str(ROOT)])


def _start_gateway(
    descriptor_set: Path, backend: str, port: int, directory: Path
) -> subprocess.Popen[bytes]:
    environ = {
        **os.environ,
        "ENVIOS_LISTEN_ADDRESS": f"{HOST}:{port}",
        "ENVIOS_UPSTREAM_GRPC": backend,
        "ENVIOS_GATEWAY_DESCRIPTOR_SET": str(descriptor_set),
        "ENVIOS_LOG_LEVEL": "WARNING",
        "ENVIOS_MAX_CONCURRENT_REQUESTS": "1000",
    }
    log = (directory / "gateway.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def _print(results: dict[tuple[str, str], dict[str, float]], args: argparse.Namespace) -> None:
    print(f"h2load --h1 -c {args.connections} -D {args.duration} (2 s warm-up), one run each")
    print(f"{'request':8} {'target':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-200':>8}")
    for (target, name), row in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        print(
            f"{name:8} {target:8} {row['rps']:9.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
            f"{int(row['non_200']):8d}"
        )
    for name in REQUESTS:
        ratio = results[("gateway", name)]["rps"] / results[("envoy", name)]["rps"]
        print(f"{name}: gateway / envoy throughput = {ratio:.2f}")


if __name__ == "__main__":
    sys.exit(main())
