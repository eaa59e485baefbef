"""The HTTP server: OpenAI's chat and image endpoints, the web UI, health and model listing.

Handlers validate and tokenize (cheap, so bad input is refused before it takes a queue slot),
hand a `Job` to the `Worker` (through `jobs.Jobs`) and turn what it emits into OpenAI's response
or stream objects. Every error a client can cause is a 4xx in OpenAI's shape (`errors`); the
body limit and the API key are checked before routing (`middleware`); `inputs` reads requests.

What a client sends is read defensively: with an API key set, every /v1 request is authenticated
before its body is read or its route looked up; an image's declared size is checked before it is
decoded; decoding and tokenizing run on a small thread pool, never on the event loop, so one
heavy request cannot stall the others (or /health).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles

from smalto.apps.serve import protocol as p
from smalto.apps.serve.config import ServeConfig
from smalto.apps.serve.errors import APIError, context_code, error_body, install_handlers, without_422
from smalto.apps.serve.inputs import count_images, stop_strings, to_messages
from smalto.apps.serve.jobs import Jobs
from smalto.apps.serve.middleware import LimitBody, RequireKey
from smalto.apps.serve.worker import Worker
from smalto.errors import SmaltoError
from smalto.inference import Sampling
from smalto.effort import Drawing
from smalto.pipeline import Message, Pipeline
from smalto.data.video import clip_bytes
from smalto.plots import png_bytes

STATIC = Path(__file__).resolve().parent / "static"


def create_app(pipe: Pipeline, cfg: ServeConfig | None = None, worker: Worker | None = None) -> FastAPI:
    """The app; with no `worker`, it runs one in a background thread for as long as it is up."""
    cfg = cfg or ServeConfig()
    created = int(time.time())
    state: dict = {}
    jobs = Jobs(pipe, cfg, lambda: state["worker"])
    # An image takes its codes plus <boi> and <eoi>: more than this many cannot fit the context.
    max_images = pipe.context // pipe.picture_tokens

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["worker"] = worker or Worker(pipe, cfg.max_queue, cfg.max_batch)
        state["readers"] = ThreadPoolExecutor(cfg.readers, thread_name_prefix="smalto-read")
        yield
        state["readers"].shutdown(wait=False, cancel_futures=True)
        if worker is None:  # uvicorn has waited for in-flight requests; this finishes anything queued
            await asyncio.to_thread(state["worker"].close, cfg.timeout)

    app = FastAPI(title="smalto", version=_version(), lifespan=lifespan, redirect_slashes=False,
                  description="An OpenAI-compatible API for a smalto model: chat about images, draw from text.")
    app.add_middleware(LimitBody, max_bytes=cfg.max_body_bytes)
    app.add_middleware(RequireKey, key=cfg.api_key)  # added last: runs first, before the body is read
    install_handlers(app)
    # Enforced by RequireKey; declared on the routes so the OpenAPI schema documents it.
    bearer = HTTPBearer(auto_error=False, description="Needed only when the server runs with --api-key.")

    async def off_the_loop(fn, *args):
        """Run CPU-heavy request parsing (image decoding, tokenizing) on the readers' pool."""
        return await asyncio.get_running_loop().run_in_executor(state["readers"], fn, *args)

    def check_model(name: str | None, param: str = "model") -> None:
        if name is not None and name != cfg.model_name:
            raise APIError(404, f"the model '{name}' does not exist; this server has '{cfg.model_name}'",
                           param=param, code="model_not_found")

    errors = {status: {"model": p.ErrorResponse} for status in (400, 401, 404, 413, 503, 504)}

    # --- routes

    @app.post("/v1/chat/completions", response_model=p.ChatCompletion, responses={
        **errors, 200: {"content": {"text/event-stream": {"schema": p.ChatCompletionChunk.model_json_schema()}},
                        "description": "A chat.completion object, or with stream=true a stream of "
                                       "chat.completion.chunk objects as server-sent events."}},
        dependencies=[Depends(bearer)], tags=["chat"])
    async def chat_completions(body: p.ChatCompletionRequest, request: Request):
        check_model(body.model)
        stop = stop_strings(body.stop)
        if (n := count_images(body.messages)) > max_images:  # refused before decoding any of them
            raise APIError(400, f"{n} images do not fit this model's context (at most {max_images})",
                           param="messages", code="context_length_exceeded")

        def read() -> tuple[list[Message], int]:
            messages = to_messages(body.messages, pipe.image_size, cfg.max_image_pixels, cfg.max_request_pixels)
            try:  # checked here without torch: the images are encoded on the model's thread
                return messages, pipe.prompt_length(messages)
            except SmaltoError as e:
                raise APIError(400, str(e), param="messages", code=context_code(e)) from None

        messages, length = await off_the_loop(read)
        max_new = pipe.reply_budget(length, body.max_completion_tokens or body.max_tokens)
        if max_new < 1:
            raise APIError(400, "the conversation fills the model's context; no room for a reply",
                           param="messages", code="context_length_exceeded")
        effort = _effort(body.reasoning_effort)
        if effort != "none" or body.best_of is not None:
            return await reasoned_chat(body, messages, length, max_new, effort, stop, request)
        sampling = Sampling(body.temperature or 0.0, body.top_k or 0, 1.0 if body.top_p is None else body.top_p,
                            body.seed)
        # Until the worker encodes the images (`prepare`), stand-ins of the prompt's length.
        job, events = jobs.submit("chat", [[pipe.vocab.pad] * length] * body.n, max_new, sampling,
                                  prepare=lambda: [pipe.chat_prompt(messages)] * body.n)
        reply_id, now, counts = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), [0] * body.n

        def usage() -> p.Usage:
            return p.Usage(prompt_tokens=length, completion_tokens=sum(counts), total_tokens=length + sum(counts))

        if body.stream:
            async def deltas() -> AsyncIterator[tuple[int, p.Delta, str | None]]:
                async for i, text, finish, counts[i] in jobs.replies(job, events, stop, None):
                    if text:
                        yield i, p.Delta(content=text), None
                    if finish:
                        yield i, p.Delta(), finish

            return stream(reply_id, now, body, deltas(), usage, job)

        texts, finishes = [""] * body.n, ["length"] * body.n
        try:
            async for i, text, finish, counts[i] in jobs.replies(job, events, stop, request):
                texts[i] += text
                finishes[i] = finish or finishes[i]
        finally:
            job.closed.set()
        return p.ChatCompletion(id=reply_id, created=now, model=cfg.model_name, usage=usage(), choices=[
            p.Choice(index=i, message=p.AssistantMessage(content=t), finish_reason=f)
            for i, (t, f) in enumerate(zip(texts, finishes))])

    async def reasoned_chat(body: p.ChatCompletionRequest, messages: list[Message], length: int, max_new: int,
                      effort: str, stop: list[str], request: Request):
        """A reply with test-time compute (`Pipeline.chat_events`): the thinking as
        `reasoning_content`, then the answer; choices one after another on the worker."""
        def work(job) -> None:
            for i in range(body.n):
                for kind, value in pipe.chat_events(messages, max_new, effort, body.best_of, seed=(body.seed or 0) + i):
                    if job.closed.is_set():
                        return
                    job.emit((kind, i, _cut(value, stop) if kind == "content" else value))

        job, events = jobs.submit("reply", [], max_new, Sampling(), work=work)
        reply_id, now, replies = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), [None] * body.n

        def usage() -> p.Usage:
            done = [r for r in replies if r is not None]
            completion = sum(r.tokens for r in done)
            return p.Usage(prompt_tokens=length, completion_tokens=completion, total_tokens=length + completion,
                           completion_tokens_details=p.CompletionTokensDetails(
                               reasoning_tokens=sum(r.reasoning_tokens for r in done)))

        if body.stream:
            async def deltas() -> AsyncIterator[tuple[int, p.Delta, str | None]]:
                async for kind, i, value in jobs.events(job, events, None):
                    if kind == "reasoning" and value:
                        yield i, p.Delta(reasoning_content=value), None
                    elif kind == "content":
                        yield i, p.Delta(content=value), None
                    elif kind == "reply":
                        replies[i] = value
                        yield i, p.Delta(answered_by=value.answered_by), "stop"

            return stream(reply_id, now, body, deltas(), usage, job)

        texts = [""] * body.n
        async for kind, i, value in jobs.events(job, events, request):
            if kind == "content":
                texts[i] += value
            elif kind == "reply":
                replies[i] = value
        return p.ChatCompletion(id=reply_id, created=now, model=cfg.model_name, usage=usage(), choices=[
            p.Choice(index=i, message=p.AssistantMessage(content=t, reasoning_content=r.reasoning or None,
                                                         answered_by=r.answered_by), finish_reason="stop")
            for i, (t, r) in enumerate(zip(texts, replies))])

    def stream(reply_id: str, now: int, body: p.ChatCompletionRequest,
               deltas: AsyncIterator[tuple[int, p.Delta, str | None]], usage, job) -> StreamingResponse:
        """A reply as server-sent chunks: each choice's role, then its (delta, finish_reason) pieces,
        the usage if asked for, and [DONE]; an error mid-stream is one last data line."""
        def chunk(choices: list[p.ChunkChoice], usage: p.Usage | None = None) -> str:
            c = p.ChatCompletionChunk(id=reply_id, created=now, model=cfg.model_name, choices=choices, usage=usage)
            return f"data: {c.model_dump_json(exclude_none=c.usage is None)}\n\n"

        async def sse() -> AsyncIterator[str]:
            try:
                for i in range(body.n):
                    yield chunk([p.ChunkChoice(index=i, delta=p.Delta(role="assistant", content=""))])
                async for i, delta, finish in deltas:
                    yield chunk([p.ChunkChoice(index=i, delta=delta, finish_reason=finish)])
                if body.stream_options and body.stream_options.include_usage:
                    yield chunk([], usage())
                yield "data: [DONE]\n\n"
            except APIError as e:
                yield f"data: {json.dumps(error_body(e.message, e.type, e.param, e.code))}\n\n"
            finally:
                job.closed.set()

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/images/generations", response_model=p.ImagesResponse, responses=errors,
              dependencies=[Depends(bearer)], tags=["images"])
    async def images_generations(body: p.ImageGenerationRequest, request: Request):
        check_model(body.model)
        native = f"{pipe.image_size}x{pipe.image_size}"
        if body.size not in (None, "auto", native):
            raise APIError(400, f"this model draws {native} images; size {body.size!r} is not available",
                           param="size", code="unsupported_size")
        if body.response_format == "url":
            raise APIError(400, "response_format 'url' is not supported (this server hosts no files); use 'b64_json'",
                           param="response_format")
        try:
            ids = await off_the_loop(pipe.text_ids, body.prompt)
        except SmaltoError as e:
            raise APIError(400, str(e), param="prompt", code=context_code(e)) from None
        sampling = pipe.draw_sampling(body.seed, guidance=body.guidance_scale, temperature=body.temperature)
        effort = _effort(body.reasoning_effort)
        if body.video:
            if not pipe.reads_clips:
                raise APIError(400, f"{cfg.model_name} was not trained on clips", param="video")
            if effort != "none" or body.best_of is not None:
                raise APIError(400, "clips are drawn without test-time effort", param="reasoning_effort")

            def work(job) -> None:
                job.emit(("drawings", [Drawing(clip, body.prompt) for clip in pipe.generate_clip(
                    body.prompt, body.n, body.guidance_scale, body.seed, body.temperature)]))

            job, events = jobs.submit("draw", [], 0, sampling, work=work)
            drawings = await jobs.images(job, events, request)
        elif effort == "none" and body.best_of is None:
            job, events = jobs.submit("draw", [ids] * body.n, pipe.vocab.image_tokens + 1, sampling)
            drawings = [Drawing(image, body.prompt) for image in await jobs.images(job, events, request)]
        else:
            try:  # words outside the grammar, a contradiction, too many candidates: the client's mistake
                await off_the_loop(pipe.check_drawing_request, body.prompt, body.n, effort, body.best_of)
            except SmaltoError as e:
                raise APIError(400, str(e), param="prompt", code="invalid_prompt") from None

            def work(job) -> None:
                job.emit(("drawings", pipe.drawings(body.prompt, body.n, effort, body.best_of, body.seed,
                                                    guidance=body.guidance_scale, temperature=body.temperature)))

            job, events = jobs.submit("draw", [], 0, sampling, work=work)
            drawings = await jobs.images(job, events, request)
        encode = (lambda x: clip_bytes(x, "GIF")) if body.video else png_bytes
        encoded = await asyncio.to_thread(lambda: [base64.b64encode(encode(d.image)).decode() for d in drawings])
        return p.ImagesResponse(created=int(time.time()), data=[
            p.ImageData(b64_json=b, mime_type="image/gif" if body.video else "image/png",
                        revised_prompt=d.prompt if d.prompt != body.prompt else None,
                        verdict=p.Verdict(**d.verdict.to_dict()) if d.verdict is not None else None)
            for b, d in zip(encoded, drawings)])

    @app.get("/v1/models", response_model=p.ModelList, responses=errors, dependencies=[Depends(bearer)],
             tags=["models"])
    async def models():
        return p.ModelList(data=[p.ModelCard(id=cfg.model_name, created=created)])

    @app.get("/v1/models/{model}", response_model=p.ModelCard, responses=errors, dependencies=[Depends(bearer)],
             tags=["models"])
    async def model_card(model: str):
        check_model(model)
        return p.ModelCard(id=cfg.model_name, created=created)

    @app.get("/health", response_model=p.Health, tags=["server"])
    async def health():
        worker: Worker = state["worker"]
        return p.Health(status="draining" if worker.closing else "ok", model=cfg.model_name,
                        queued=worker.queued, max_queue=cfg.max_queue, served=worker.served)

    # --- the web UI

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/ui/config", include_in_schema=False)
    async def ui_config():
        return {"model": cfg.model_name, "image_size": pipe.image_size, "needs_key": cfg.api_key is not None,
                "draw": pipe.draw_defaults, "examples": _examples(pipe.image_size), "clips": pipe.reads_clips}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.openapi = lambda: without_422(app)
    return app


def _effort(value: str | None) -> str:
    """OpenAI's reasoning_effort as smalto's effort level."""
    return {None: "none", "minimal": "low"}.get(value, value)


def _cut(text: str, stop: list[str]) -> str:
    """The text before the first stop string."""
    for s in stop:
        text = text.split(s)[0]
    return text


@functools.lru_cache(maxsize=4)
def _examples(size: int, n: int = 6) -> list[str]:
    """A few ShapesWorld scenes as data URLs, for users with no image at hand."""
    from smalto.data.shapes import ShapesConfig, ShapesWorld

    world = ShapesWorld(ShapesConfig(image_size=size), seed=2024, split="train")
    return ["data:image/png;base64," + base64.b64encode(png_bytes(world[i].image)).decode() for i in range(n)]


def _version() -> str:
    from smalto import __version__
    return __version__
