"""Subprocess helpers shared by the benchmarks that start servers."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """TERM, then KILL when the process has not exited within ``timeout_s``."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_ready(process: subprocess.Popen, url: str, timeout_s: float, describe: Callable[[], str] = str,
               error: type[Exception] = RuntimeError) -> None:
    """Poll ``url``/readyz until it answers 200; raise ``error`` (with ``describe()``, e.g. the log tail)
    when the process exits first or the time runs out."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise error(f"server exited {process.returncode}: {describe()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise error(f"server not ready within {timeout_s:.0f} s: {describe()}")
        time.sleep(0.2)


def redis_answers(host: str = "127.0.0.1", port: int = 6379, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def drop_namespace(store_url: str, namespace: str) -> None:
    """Delete a bench run's keys from a shared Redis (its namespace is unique to the run)."""
    import redis

    client = redis.Redis.from_url(store_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
