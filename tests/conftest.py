"""Shared fixtures: the shipped model, loaded once, and real HTTP servers on loopback."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

import smalto
from smalto.serve import ServeConfig, create_app


@pytest.fixture(scope="session")
def shipped():
    return smalto.load()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"no server answered at {url}")


@contextmanager
def running_server(pipe, cfg: ServeConfig):
    """A real uvicorn server in a thread; yields its base URL, stops it (gracefully) on exit."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(pipe, cfg), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
