"""Serving: an OpenAI-compatible HTTP API with a web UI (`smalto serve`), and a terminal chat."""

from __future__ import annotations

import signal

from smalto.serve.app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app", "run_server"]


def run_server(pipe, cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until SIGINT or SIGTERM; in-flight requests finish, then this returns."""
    import uvicorn

    app = create_app(pipe, cfg)
    # uvicorn shuts down gracefully on either signal, then raises it again; let both arrive as
    # KeyboardInterrupt here, so a requested stop is a normal exit and not a kill.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=int(cfg.timeout) + 5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
