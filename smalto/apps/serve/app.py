"""The HTTP server: OpenAI's chat, image and audio endpoints, the web UI, health and model listing.

`create_app` assembles it: the routers (`routes/`: one per family of endpoints), the shared
`state.Server` they ask for, the middleware and the error handlers. Every error a client can
cause is a 4xx in OpenAI's shape (`errors`); the body limit and the API key are checked before
routing (`middleware`); `inputs` reads requests; `jobs` carries work to the model's worker.

What a client sends is read defensively: with an API key set, every /v1 request is authenticated
before its body is read or its route looked up; an image's declared size is checked before it is
decoded; decoding and tokenizing run on a small thread pool, never on the event loop, so one
heavy request cannot stall the others (or /health).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from smalto import __version__
from smalto.apps.serve.config import ServeConfig
from smalto.apps.serve.errors import install_handlers, without_422
from smalto.apps.serve.middleware import LimitBody, RequireKey
from smalto.apps.serve.routes import audio, chat, images, models, ui
from smalto.apps.serve.state import Server
from smalto.apps.serve.worker import Worker
from smalto.pipeline import Pipeline


def create_app(pipe: Pipeline, cfg: ServeConfig | None = None, worker: Worker | None = None) -> FastAPI:
    """The app; with no `worker`, it runs one in a background thread for as long as it is up."""
    cfg = cfg or ServeConfig()
    server = Server(pipe, cfg, created=int(time.time()))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.worker = worker or Worker(pipe, cfg.max_queue, cfg.max_batch)
        server.readers = ThreadPoolExecutor(cfg.readers, thread_name_prefix="smalto-read")
        yield
        server.readers.shutdown(wait=False, cancel_futures=True)
        if worker is None:  # uvicorn has waited for in-flight requests; this finishes anything queued
            await asyncio.to_thread(server.worker.close, cfg.timeout)

    app = FastAPI(title="smalto", version=__version__, lifespan=lifespan, redirect_slashes=False,
                  description="An OpenAI-compatible API for a smalto model: chat about images, draw from text.")
    app.state.server = server
    app.add_middleware(LimitBody, max_bytes=cfg.max_body_bytes)
    app.add_middleware(RequireKey, key=cfg.api_key)  # added last: runs first, before the body is read
    install_handlers(app)
    for routes in (chat, images, audio, models, ui):
        app.include_router(routes.router)
    app.mount("/static", StaticFiles(directory=ui.STATIC), name="static")
    app.openapi = lambda: without_422(app)
    return app
