"""The HTTP server: OpenAI's chat and image endpoints, the web UI, health and model listing.

Handlers validate and tokenize (cheap, so bad input is refused before it takes a queue slot),
hand a `Job` to the `Worker` and turn what it emits into OpenAI's response or stream objects.
Every error a client can cause is a 4xx in OpenAI's shape {"error": {message, type, param, code}}.

What a client sends is read defensively: with an API key set, every /v1 request is authenticated
before its body is read or its route looked up; an image's declared size is checked before it is
decoded; decoding and tokenizing run on a small thread pool, never on the event loop, so one
heavy request cannot stall the others (or /health).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hmac
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from smalto.chat import Message, TextStream
from smalto.data.images import MAX_PIXELS, ImageTooLarge, load_image
from smalto.engine import Sampling
from smalto.errors import ContextLengthError, SmaltoError
from smalto.options import Range
from smalto.pipeline import Pipeline
from smalto.plots import png_bytes
from smalto.serve import protocol as p
from smalto.serve.worker import Job, QueueFull, ShuttingDown, Worker

STATIC = Path(__file__).resolve().parent / "static"


@dataclass
class ServeConfig:
    model_name: str = "smalto"  # the id clients ask for
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer <key>"
    max_queue: int = 64  # requests waiting for the model; more are refused with 503
    max_batch: int = 16  # rows decoded together
    timeout: float = 60.0  # seconds a request may take, queue wait included
    max_body_bytes: int = 16 * 2**20
    max_image_pixels: int = MAX_PIXELS  # larger images are refused (400 invalid_image) before decoding
    readers: int = 2  # threads that decode images and tokenize; bounds the memory decoding can take

    def __post_init__(self) -> None:
        count = Range(1, integer=True)
        for name in ("max_queue", "max_batch", "max_body_bytes", "max_image_pixels", "readers"):
            count.check(getattr(self, name), name)
        Range(0, low_open=True).check(self.timeout, "timeout")


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return p.ErrorResponse(error=p.ErrorDetail(message=message, type=type, param=param, code=code)).model_dump()


def error_response(status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type, param, code), status_code=status)


class LimitBody:
    """ASGI middleware: a request body over `max_bytes` gets 413 before any handler reads it."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = error_response(413, f"the request body is larger than the limit of {self.max_bytes} bytes",
                                 code="payload_too_large")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await too_big(scope, receive, send)
        body, more = b"", True
        while more:  # chunked bodies have no length up front: count as they come
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message], receive), send)
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await too_big(scope, receive, send)
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


class RequireKey:
    """ASGI middleware: with a key set, every /v1 request needs 'Authorization: Bearer <key>'.

    Checked before the body is read or the route looked up, so a client without the key learns
    nothing (no 404 vs 405 vs 307 for paths it guesses) and cannot make the server buffer a body."""

    def __init__(self, app, key: str | None):
        self.app, self.key = app, None if key is None else key.encode()

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or self.key is None or not (path == "/v1" or path.startswith("/v1/")):
            return await self.app(scope, receive, send)
        scheme, _, token = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            refusal = "missing API key: send 'Authorization: Bearer <key>'"
        elif not hmac.compare_digest(token.strip(), self.key):
            refusal = "incorrect API key"
        else:
            return await self.app(scope, receive, send)
        response = error_response(401, refusal, code="invalid_api_key")
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


def _replay(messages: list[dict], receive):
    async def replayed():
        return messages.pop(0) if messages else await receive()
    return replayed


# --- request parsing

def decode_image(url: str, param: str, size: int, max_pixels: int | None) -> np.ndarray:
    """A data URL's image as uint8 [size, size, 3]; its declared size is checked before decoding."""
    if url.startswith(("http://", "https://")):
        raise APIError(400, "image URLs are not fetched (this server makes no outbound requests); send the image "
                            "inline as a data URL: data:image/png;base64,...", param=param,
                       code="image_url_not_supported")
    head, comma, data = url.partition(",")
    if not (url.startswith("data:") and comma and head.endswith(";base64")):
        raise APIError(400, "expected a data URL like data:image/png;base64,...", param=param)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "the image's data URL is not valid base64", param=param, code="invalid_base64") from None
    try:
        return load_image(raw, size, max_pixels, name="the image")
    except ImageTooLarge as e:
        raise APIError(400, f"the image is {e.width}×{e.height} pixels, over this server's limit of "
                            f"{e.limit:,} pixels", param=param, code="invalid_image") from None
    except SmaltoError:
        raise APIError(400, "the data URL does not hold an image we can read (PNG, JPEG, WebP, GIF, BMP, ...)",
                       param=param, code="invalid_image") from None


def count_images(messages: list[p.ChatMessage]) -> int:
    return sum(isinstance(part, p.ImagePart) for m in messages if isinstance(m.content, list) for part in m.content)


def to_messages(messages: list[p.ChatMessage], size: int, max_pixels: int | None) -> list[Message]:
    """The request's messages, with every image decoded and converted to the model's size."""
    out = []
    for i, m in enumerate(messages):
        if m.content is None or isinstance(m.content, str):
            out.append(Message(m.role, m.content or ""))
            continue
        texts, images = [], []
        for j, part in enumerate(m.content):
            if isinstance(part, p.TextPart):
                texts.append(part.text)
            else:
                where = f"messages.{i}.content.{j}.image_url"
                if m.role != "user":
                    raise APIError(400, f"images are only accepted in user messages, not {m.role}", param=where)
                images.append(decode_image(part.image_url.url, where, size, max_pixels))
        out.append(Message(m.role, " ".join(t.strip() for t in texts if t.strip()), images))
    return out


def stop_strings(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4 or any(not s for s in stops):
        raise APIError(400, "stop takes up to 4 non-empty strings", param="stop")
    return stops


# --- the app

def create_app(pipe: Pipeline, cfg: ServeConfig | None = None, worker: Worker | None = None) -> FastAPI:
    """The app; with no `worker`, it runs one in a background thread for as long as it is up."""
    cfg = cfg or ServeConfig()
    created = int(time.time())
    state: dict = {}
    # An image takes its codes plus <boi> and <eoi>: more than this many cannot fit the context.
    max_images = pipe.model.cfg.max_seq_len // (pipe.vocab.image_tokens + 2)

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
    # Enforced by RequireKey; declared on the routes so the OpenAPI schema documents it.
    bearer = HTTPBearer(auto_error=False, description="Needed only when the server runs with --api-key.")

    async def off_the_loop(fn, *args):
        """Run CPU-heavy request parsing (image decoding, tokenizing) on the readers' pool."""
        return await asyncio.get_running_loop().run_in_executor(state["readers"], fn, *args)

    def check_model(name: str | None, param: str = "model") -> None:
        if name is not None and name != cfg.model_name:
            raise APIError(404, f"the model '{name}' does not exist; this server has '{cfg.model_name}'",
                           param=param, code="model_not_found")

    def submit(kind: str, prompts: list[list[int]], max_new: int, sampling: Sampling,
               guidance: float | None = None, prepare=None) -> tuple[Job, asyncio.Queue]:
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def emit(event: tuple) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the event loop is gone (server stopped)
                pass

        job = Job(kind, prompts, max_new, sampling, emit, guidance, prepare)
        try:
            state["worker"].submit(job)
        except QueueFull:
            raise APIError(503, f"the server is busy ({cfg.max_queue} requests queued); retry later",
                           type="server_error", code="queue_full") from None
        except ShuttingDown:
            raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down") from None
        return job, events

    async def next_event(job: Job, events: asyncio.Queue, deadline: float, request: Request | None) -> tuple:
        """The worker's next event for `job`; gives up at the deadline or, for a non-streamed
        request, when the client has gone (a stream learns that from Starlette cancelling it)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise APIError(504, f"the request took longer than {cfg.timeout:g} s", type="server_error",
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

    async def replies(job: Job, events: asyncio.Queue, stop: list[str], counts: list[int], request: Request | None
                      ) -> AsyncIterator[tuple[int, str, str | None]]:
        """(choice, text, finish_reason) as the choices' tokens arrive, counting them in `counts`."""
        deadline = time.monotonic() + cfg.timeout
        streams = [TextStream(pipe.tokenizers.text, stop) for _ in job.prompts]
        finish: list[str | None] = [None] * len(streams)
        while None in finish:
            event = await next_event(job, events, deadline, request)
            if event[0] == "done":  # the batch ended: whatever is unfinished ran out of room
                for i in (i for i, f in enumerate(finish) if f is None):
                    finish[i] = "length"
                    yield i, streams[i].finish(), "length"
                break
            for i, token in enumerate(event[1]):
                if finish[i] is not None:
                    continue
                counts[i] += 1
                if token == pipe.vocab.eos:
                    piece, finish[i] = streams[i].finish(), "stop"
                else:
                    piece = streams[i].push(token)
                    if streams[i].stopped:
                        finish[i] = "stop"
                    elif counts[i] == job.max_new_tokens:
                        piece, finish[i] = piece + streams[i].finish(), "length"
                if piece or finish[i]:
                    yield i, piece, finish[i]
        job.closed.set()  # every choice is complete; the worker may stop decoding for us

    # --- error handlers: everything in OpenAI's shape

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return error_response(e.status, e.message, e.type, e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError):
        errors = e.errors()
        # A union reports one error per member; the deepest one names the real problem.
        first = max(errors, key=lambda err: len(err["loc"]), default={"loc": (), "msg": "invalid request", "type": ""})
        loc = [str(x) for x in first["loc"] if x != "body" and not _is_union_member(x)]
        param = ".".join(loc) or None
        if first["type"] == "json_invalid":
            reason = first.get("ctx", {}).get("error", first["msg"])
            param, message = None, f"the request body is not valid JSON ({reason})"
        elif first["type"] == "extra_forbidden":
            message = f"unsupported parameter: '{param}'"
        elif first["type"] == "value_error":  # a check of ours (smalto.options): "must be ..., got ..."
            message = f"{param} {first['ctx']['error']}"
        else:
            message = f"{param}: {first['msg']}" if param else first["msg"]
        return error_response(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        detail = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
        if e.status_code in (404, 405):
            detail = f"no route {request.method} {request.url.path}"
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return error_response(e.status_code, detail, code=code)

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception):
        return error_response(500, f"internal error: {type(e).__name__}: {e}", type="server_error")

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

        def read() -> tuple[list[Message], list[int]]:
            messages = to_messages(body.messages, pipe.image_size, cfg.max_image_pixels)
            try:  # checked here without torch: the images are encoded on the model's thread
                return messages, pipe.chat_prompt(messages, encode_images=False)
            except SmaltoError as e:
                raise APIError(400, str(e), param="messages", code=_context_code(e)) from None

        messages, prompt = await off_the_loop(read)
        max_new = pipe.reply_budget(prompt, body.max_completion_tokens or body.max_tokens)
        if max_new < 1:
            raise APIError(400, "the conversation fills the model's context; no room for a reply",
                           param="messages", code="context_length_exceeded")
        sampling = Sampling(body.temperature or 0.0, body.top_k or 0, 1.0 if body.top_p is None else body.top_p,
                            body.seed)
        job, events = submit("chat", [prompt] * body.n, max_new, sampling,
                             prepare=lambda: [pipe.chat_prompt(messages)] * body.n)
        reply_id, now, counts = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), [0] * body.n

        def usage() -> p.Usage:
            return p.Usage(prompt_tokens=len(prompt), completion_tokens=sum(counts),
                           total_tokens=len(prompt) + sum(counts))

        if body.stream:
            def chunk(choices: list[p.ChunkChoice], usage: p.Usage | None = None) -> str:
                c = p.ChatCompletionChunk(id=reply_id, created=now, model=cfg.model_name, choices=choices, usage=usage)
                return f"data: {c.model_dump_json(exclude_none=c.usage is None)}\n\n"

            async def sse() -> AsyncIterator[str]:
                try:
                    for i in range(body.n):
                        yield chunk([p.ChunkChoice(index=i, delta=p.Delta(role="assistant", content=""))])
                    async for i, text, finish in replies(job, events, stop, counts, None):
                        if text:
                            yield chunk([p.ChunkChoice(index=i, delta=p.Delta(content=text))])
                        if finish:
                            yield chunk([p.ChunkChoice(index=i, delta=p.Delta(), finish_reason=finish)])
                    if body.stream_options and body.stream_options.include_usage:
                        yield chunk([], usage())
                    yield "data: [DONE]\n\n"
                except APIError as e:
                    yield f"data: {json.dumps(error_body(e.message, e.type, e.param, e.code))}\n\n"
                finally:
                    job.closed.set()

            return StreamingResponse(sse(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        texts, finishes = [""] * body.n, ["length"] * body.n
        try:
            async for i, text, finish in replies(job, events, stop, counts, request):
                texts[i] += text
                finishes[i] = finish or finishes[i]
        finally:
            job.closed.set()
        return p.ChatCompletion(id=reply_id, created=now, model=cfg.model_name, usage=usage(), choices=[
            p.Choice(index=i, message=p.AssistantMessage(content=t), finish_reason=f)
            for i, (t, f) in enumerate(zip(texts, finishes))])

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
            raise APIError(400, str(e), param="prompt", code=_context_code(e)) from None
        guidance, sampling = pipe.sampling(body.seed, guidance=body.guidance_scale, temperature=body.temperature)
        job, events = submit("draw", [ids] * body.n, pipe.vocab.image_tokens + 1, sampling, guidance)
        deadline = time.monotonic() + cfg.timeout
        try:
            images = None
            while (event := await next_event(job, events, deadline, request))[0] != "done":
                images = event[1]
        finally:
            job.closed.set()
        encoded = await asyncio.to_thread(lambda: [base64.b64encode(png_bytes(a)).decode() for a in images])
        return p.ImagesResponse(created=int(time.time()), data=[p.ImageData(b64_json=b) for b in encoded])

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
                "draw": pipe.draw_defaults, "examples": _examples(pipe.image_size)}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.openapi = lambda: _without_422(app)
    return app


def _without_422(app: FastAPI) -> dict:
    """FastAPI documents a 422 on every route; this server answers invalid requests with a 400."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in schema["paths"].values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def _context_code(e: SmaltoError) -> str | None:
    return "context_length_exceeded" if isinstance(e, ContextLengthError) else None


def _is_union_member(segment) -> bool:
    """pydantic's name for a member of a union in an error's location ('str', 'list[...]')."""
    return isinstance(segment, str) and ("[" in segment or segment in ("str", "int", "float", "bool", "none"))


@functools.lru_cache(maxsize=4)
def _examples(size: int, n: int = 6) -> list[str]:
    """A few ShapesWorld scenes as data URLs, for users with no image at hand."""
    from smalto.data.shapes import ShapesConfig, ShapesWorld

    world = ShapesWorld(ShapesConfig(image_size=size), seed=2024, split="train")
    return ["data:image/png;base64," + base64.b64encode(png_bytes(world[i].image)).decode() for i in range(n)]


def _version() -> str:
    from smalto import __version__
    return __version__
