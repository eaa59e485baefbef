"""The glue between async request handlers and the model's worker thread.

A handler submits a `Job` and awaits its events: the worker emits them on its own thread, and
they cross into the event loop through an asyncio queue. Deadlines, client disconnects and a
full queue become `APIError`s here, so the routes read as plain request -> response code.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Callable

from fastapi import Request

from smalto.apps.serve.config import ServeConfig
from smalto.apps.serve.errors import APIError
from smalto.apps.serve.worker import Job, QueueFull, ShuttingDown, Worker
from smalto.inference import Detokenizer, Sampling
from smalto.pipeline import Pipeline


class Jobs:
    def __init__(self, pipe: Pipeline, cfg: ServeConfig, worker: Callable[[], Worker]):
        self.pipe, self.cfg, self.worker = pipe, cfg, worker

    def submit(self, kind: str, prompts: list[list[int]], max_new: int, sampling: Sampling,
               prepare: Callable[[], list[list[int]]] | None = None, work: Callable[[Job], None] | None = None
               ) -> tuple[Job, asyncio.Queue]:
        """Queue a job; its events arrive on the returned queue. 503 when the queue is full."""
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def emit(event: tuple) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the event loop is gone (server stopped)
                pass

        job = Job(kind, prompts, max_new, sampling, emit, prepare, work)
        try:
            self.worker().submit(job)
        except QueueFull:
            raise APIError(503, f"the server is busy ({self.cfg.max_queue} requests queued); retry later",
                           type="server_error", code="queue_full") from None
        except ShuttingDown:
            raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down") from None
        return job, events

    async def next_event(self, events: asyncio.Queue, deadline: float, request: Request | None) -> tuple:
        """The worker's next event for a job; gives up at the deadline or, for a non-streamed
        request, when the client has gone (a stream learns that from Starlette cancelling it)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise APIError(504, f"the request took longer than {self.cfg.timeout:g} s", type="server_error",
                               code="timeout")
            try:
                event = await asyncio.wait_for(events.get(), min(left, 1.0))
            except asyncio.TimeoutError:
                if request is not None and await request.is_disconnected():
                    raise APIError(499, "the client closed the request", code="client_closed") from None
                continue
            if event[0] == "error":
                raise APIError(500, f"the model worker failed: {event[1]}", type="server_error")
            return event

    async def replies(self, job: Job, events: asyncio.Queue, stop: list[str], request: Request | None
                      ) -> AsyncIterator[tuple[int, str, str | None, int]]:
        """(choice, text, finish_reason, tokens so far) as the choices' tokens arrive."""
        deadline = time.monotonic() + self.cfg.timeout
        eos = self.pipe.vocab.eos
        replies = [Detokenizer(self.pipe.tokenizers.text, stop, eos, job.max_new_tokens) for _ in job.prompts]
        while any(r.finish_reason is None for r in replies):
            event = await self.next_event(events, deadline, request)
            if event[0] == "done":  # the batch ended: whatever is unfinished ran out of room
                for i, r in enumerate(replies):
                    if r.finish_reason is None:
                        yield i, r.finish("length"), "length", r.count
                break
            for i, (r, token) in enumerate(zip(replies, event[1])):
                if r.finish_reason is None:
                    piece = r.push(token)
                    if piece or r.finish_reason:
                        yield i, piece, r.finish_reason, r.count
        job.closed.set()  # every choice is complete; the worker may stop decoding for us

    async def events(self, job: Job, events: asyncio.Queue, request: Request | None) -> AsyncIterator[tuple]:
        """A job's events until it is done (the job is closed when the caller stops listening)."""
        deadline = time.monotonic() + self.cfg.timeout
        try:
            while (event := await self.next_event(events, deadline, request))[0] != "done":
                yield event
        finally:
            job.closed.set()

    async def images(self, job: Job, events: asyncio.Queue, request: Request) -> list:
        images = None
        async for event in self.events(job, events, request):
            images = event[1]
        return images
