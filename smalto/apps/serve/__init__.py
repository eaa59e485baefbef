"""Serving: an OpenAI-compatible HTTP API with a web UI (`smalto serve`), and a terminal chat."""

from __future__ import annotations

import signal
import threading

from smalto.errors import SmaltoError
from smalto.apps.serve.app import create_app
from smalto.apps.serve.config import ServeConfig
from smalto.apps.serve.worker import Worker

__all__ = ["ServeConfig", "create_app", "run_server"]


def run_server(pipe, cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until SIGINT or SIGTERM; in-flight and queued requests finish, then this returns.

    HTTP runs in a thread, the model on the calling (main) thread, where torch is fastest."""
    import uvicorn

    worker = Worker(pipe, cfg.max_queue, cfg.max_batch, background=False)
    server = uvicorn.Server(uvicorn.Config(create_app(pipe, cfg, worker), host=host, port=port, log_level=log_level,
                                           timeout_graceful_shutdown=int(cfg.timeout) + 5))

    def http() -> None:
        try:
            server.run()
        finally:  # every request has been answered: let the worker drain its queue and return
            worker.close()

    thread = threading.Thread(target=http, name="smalto-http")
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        thread.start()
        worker.run()
    finally:
        server.should_exit = True
        thread.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise SmaltoError(f"could not serve on {host}:{port} (is the port in use?)")
