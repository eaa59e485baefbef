"""What every route shares: the pipeline, the config, the job queue and the readers' pool, held
by one `Server` on the app; a route asks for it with `Depends(server)`."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import Request
from fastapi.security import HTTPBearer

from smalto.apps.serve import protocol as p
from smalto.apps.serve.config import ServeConfig
from smalto.apps.serve.errors import APIError
from smalto.apps.serve.jobs import Jobs
from smalto.apps.serve.worker import Worker
from smalto.pipeline import Pipeline

# Enforced by middleware.RequireKey; declared on the routes so the OpenAPI schema documents it.
BEARER = HTTPBearer(auto_error=False, description="Needed only when the server runs with --api-key.")
ERRORS = {status: {"model": p.ErrorResponse} for status in (400, 401, 404, 413, 503, 504)}


@dataclass
class Server:
    pipe: Pipeline
    cfg: ServeConfig
    created: int  # when it started (the model cards' `created`)
    worker: Worker | None = None  # set while the app runs (its lifespan)
    readers: ThreadPoolExecutor | None = None

    def __post_init__(self) -> None:
        self.jobs = Jobs(self.pipe, self.cfg, lambda: self.worker)
        # A picture takes `picture_tokens` of the context: more than this many cannot fit.
        self.max_images = self.pipe.context // self.pipe.picture_tokens

    async def off_the_loop(self, fn, *args):
        """Run CPU-heavy request parsing (image decoding, tokenizing) on the readers' pool."""
        return await asyncio.get_running_loop().run_in_executor(self.readers, fn, *args)

    def check_model(self, name: str | None, param: str = "model") -> None:
        if name is not None and name != self.cfg.model_name:
            raise APIError(404, f"the model '{name}' does not exist; this server has '{self.cfg.model_name}'",
                           param=param, code="model_not_found")


def server(request: Request) -> Server:
    return request.app.state.server


def effort_of(value: str | None) -> str:
    """OpenAI's reasoning_effort as smalto's effort level."""
    return {None: "none", "minimal": "low"}.get(value, value)
