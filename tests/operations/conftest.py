"""Fixtures for the operations tests: a local HTTP sink for alerts, free ports, scraping."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sink:
    """What the local endpoint received (JSON bodies), and how it answers (status, delay in seconds)."""

    port: int
    received: list[dict] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0

    def url(self, path: str = "alerts") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received


@pytest.fixture
def sink() -> Iterator[Sink]:
    """An HTTP server on 127.0.0.1 that records every POSTed JSON body (apprise's ``json://`` target)."""
    state = Sink(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if state.delay:
                time.sleep(state.delay)
            state.received.append(json.loads(body or b"{}"))
            self.send_response(state.status)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def scrape(port: int, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        return resp.read().decode()


def samples(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of a Prometheus text exposition (labels as printed, sorted by the client)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for this test session (skipped with the reason when the binaries are absent,
    except in CI, where `make postgres` installs them and their absence is a failure)."""
    import os

    from tests.operations.postgres_server import server_bin, start_server

    if server_bin() is None:
        message = "PostgreSQL server binaries not installed (`make postgres` installs Debian's postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = start_server()
    yield server
    server.stop()
