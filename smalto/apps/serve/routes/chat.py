"""POST /v1/chat/completions: OpenAI's chat, streamed or whole, with test-time effort.

The handler validates and tokenizes (cheap, so bad input is refused before it takes a queue
slot), hands a `Job` to the worker and turns what it emits into OpenAI's objects."""

from __future__ import annotations

import json
import time
import uuid
from typing import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from smalto.apps.serve import protocol as p
from smalto.apps.serve.errors import APIError, context_code, error_body
from smalto.apps.serve.inputs import count_images, stop_strings, to_messages
from smalto.apps.serve.state import BEARER, ERRORS, Server, effort_of, server
from smalto.errors import SmaltoError
from smalto.inference import Sampling
from smalto.pipeline import Message

router = APIRouter()


@router.post("/v1/chat/completions", response_model=p.ChatCompletion, responses={
    **ERRORS, 200: {"content": {"text/event-stream": {"schema": p.ChatCompletionChunk.model_json_schema()}},
                    "description": "A chat.completion object, or with stream=true a stream of "
                                   "chat.completion.chunk objects as server-sent events."}},
    dependencies=[Depends(BEARER)], tags=["chat"])
async def chat_completions(body: p.ChatCompletionRequest, request: Request, s: Server = Depends(server)):
    s.check_model(body.model)
    stop = stop_strings(body.stop)
    if (n := count_images(body.messages)) > s.max_images:  # refused before decoding any of them
        raise APIError(400, f"{n} images do not fit this model's context (at most {s.max_images})",
                       param="messages", code="context_length_exceeded")
    messages, length = await s.off_the_loop(_read, s, body)
    max_new = s.pipe.reply_budget(length, body.max_completion_tokens or body.max_tokens)
    if max_new < 1:
        raise APIError(400, "the conversation fills the model's context; no room for a reply",
                       param="messages", code="context_length_exceeded")
    effort = effort_of(body.reasoning_effort)
    if effort != "none" or body.best_of is not None:
        return await _reasoned(s, body, messages, length, max_new, effort, stop, request)
    sampling = Sampling(body.temperature or 0.0, body.top_k or 0, 1.0 if body.top_p is None else body.top_p,
                        body.seed)
    # Until the worker encodes the images (`prepare`), stand-ins of the prompt's length.
    job, events = s.jobs.submit("chat", [[s.pipe.vocab.pad] * length] * body.n, max_new, sampling,
                                prepare=lambda: [s.pipe.chat_prompt(messages)] * body.n)
    reply_id, now, counts = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), [0] * body.n

    def usage() -> p.Usage:
        return p.Usage(prompt_tokens=length, completion_tokens=sum(counts), total_tokens=length + sum(counts))

    if body.stream:
        async def deltas() -> AsyncIterator[tuple[int, p.Delta, str | None]]:
            async for i, text, finish, counts[i] in s.jobs.replies(job, events, stop, None):
                if text:
                    yield i, p.Delta(content=text), None
                if finish:
                    yield i, p.Delta(), finish

        return _stream(s, reply_id, now, body, deltas(), usage, job)

    texts, finishes = [""] * body.n, ["length"] * body.n
    try:
        async for i, text, finish, counts[i] in s.jobs.replies(job, events, stop, request):
            texts[i] += text
            finishes[i] = finish or finishes[i]
    finally:
        job.closed.set()
    return p.ChatCompletion(id=reply_id, created=now, model=s.cfg.model_name, usage=usage(), choices=[
        p.Choice(index=i, message=p.AssistantMessage(content=t), finish_reason=f)
        for i, (t, f) in enumerate(zip(texts, finishes))])


def _read(s: Server, body: p.ChatCompletionRequest) -> tuple[list[Message], int]:
    """The request's messages, pictures decoded, and its prompt's length (on the readers' pool;
    checked without torch: the pictures are encoded on the model's thread)."""
    messages = to_messages(body.messages, s.pipe.image_size, s.cfg.max_image_pixels, s.cfg.max_request_pixels,
                           s.pipe.sample_rate if s.pipe.hears else None)
    try:
        return messages, s.pipe.prompt_length(messages)
    except SmaltoError as e:
        raise APIError(400, str(e), param="messages", code=context_code(e)) from None


async def _reasoned(s: Server, body: p.ChatCompletionRequest, messages: list[Message], length: int, max_new: int,
                    effort: str, stop: list[str], request: Request):
    """A reply with test-time compute (`Pipeline.chat_events`): the thinking as
    `reasoning_content`, then the answer; choices one after another on the worker."""
    def work(job) -> None:
        for i in range(body.n):
            for kind, value in s.pipe.chat_events(messages, max_new, effort, body.best_of, seed=(body.seed or 0) + i):
                if job.closed.is_set():
                    return
                job.emit((kind, i, _cut(value, stop) if kind == "content" else value))

    job, events = s.jobs.submit("reply", [], max_new, Sampling(), work=work)
    reply_id, now, replies = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), [None] * body.n

    def usage() -> p.Usage:
        done = [r for r in replies if r is not None]
        completion = sum(r.tokens for r in done)
        return p.Usage(prompt_tokens=length, completion_tokens=completion, total_tokens=length + completion,
                       completion_tokens_details=p.CompletionTokensDetails(
                           reasoning_tokens=sum(r.reasoning_tokens for r in done)))

    if body.stream:
        async def deltas() -> AsyncIterator[tuple[int, p.Delta, str | None]]:
            async for kind, i, value in s.jobs.events(job, events, None):
                if kind == "reasoning" and value:
                    yield i, p.Delta(reasoning_content=value), None
                elif kind == "content":
                    yield i, p.Delta(content=value), None
                elif kind == "reply":
                    replies[i] = value
                    yield i, p.Delta(answered_by=value.answered_by), "stop"

        return _stream(s, reply_id, now, body, deltas(), usage, job)

    texts = [""] * body.n
    async for kind, i, value in s.jobs.events(job, events, request):
        if kind == "content":
            texts[i] += value
        elif kind == "reply":
            replies[i] = value
    return p.ChatCompletion(id=reply_id, created=now, model=s.cfg.model_name, usage=usage(), choices=[
        p.Choice(index=i, message=p.AssistantMessage(content=t, reasoning_content=r.reasoning or None,
                                                     answered_by=r.answered_by), finish_reason="stop")
        for i, (t, r) in enumerate(zip(texts, replies))])


def _stream(s: Server, reply_id: str, now: int, body: p.ChatCompletionRequest,
            deltas: AsyncIterator[tuple[int, p.Delta, str | None]], usage, job) -> StreamingResponse:
    """A reply as server-sent chunks: each choice's role, then its (delta, finish_reason) pieces,
    the usage if asked for, and [DONE]; an error mid-stream is one last data line."""
    def chunk(choices: list[p.ChunkChoice], usage: p.Usage | None = None) -> str:
        c = p.ChatCompletionChunk(id=reply_id, created=now, model=s.cfg.model_name, choices=choices, usage=usage)
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


def _cut(text: str, stop: list[str]) -> str:
    """The text before the first stop string."""
    for stop_string in stop:
        text = text.split(stop_string)[0]
    return text
