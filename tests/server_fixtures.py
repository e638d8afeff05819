"""Shared pieces of the server tests: a tiny random model, apps, a real uvicorn on loopback."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from polylate import load_model
from tests.layouts import write_jina

KEY = "test-key-0123456789"


def tiny_model(folder: Path):
    """A 2-layer random model in the jina-colbert-v2 layout (128-d head, rotary)."""
    write_jina(folder / "tiny-jina")
    return load_model(folder / "tiny-jina")


def app_for(model, index_root: Path, **settings):
    """A server app; without the start-up kernel warm-up unless asked (a test's server lives
    seconds, and the kernels are compiled by then anyway)."""
    from polylate.server import ServerSettings, create_app

    settings.setdefault("warm_up", False)
    return create_app(ServerSettings(index_root=index_root, **settings), model=model)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app):
    """The app under a real uvicorn in a thread of this process; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
