"""POST /v1/images/generations: pictures (PNG) or clips (GIF) drawn from a prompt, with test-time
effort planning and verifying them."""

from __future__ import annotations

import asyncio
import base64
import time

from fastapi import APIRouter, Depends, Request

from smalto.apps.serve import protocol as p
from smalto.apps.serve.errors import APIError, context_code
from smalto.apps.serve.state import BEARER, ERRORS, Server, effort_of, server
from smalto.data.video import clip_bytes
from smalto.effort import Drawing
from smalto.errors import SmaltoError
from smalto.plots import png_bytes

router = APIRouter()


@router.post("/v1/images/generations", response_model=p.ImagesResponse, responses=ERRORS,
             dependencies=[Depends(BEARER)], tags=["images"])
async def images_generations(body: p.ImageGenerationRequest, request: Request, s: Server = Depends(server)):
    s.check_model(body.model)
    pipe = s.pipe
    native = f"{pipe.image_size}x{pipe.image_size}"
    if body.size not in (None, "auto", native):
        raise APIError(400, f"this model draws {native} images; size {body.size!r} is not available",
                       param="size", code="unsupported_size")
    if body.response_format == "url":
        raise APIError(400, "response_format 'url' is not supported (this server hosts no files); use 'b64_json'",
                       param="response_format")
    try:
        ids = await s.off_the_loop(pipe.text_ids, body.prompt)
    except SmaltoError as e:
        raise APIError(400, str(e), param="prompt", code=context_code(e)) from None
    sampling = pipe.draw_sampling(body.seed, guidance=body.guidance_scale, temperature=body.temperature)
    effort = effort_of(body.reasoning_effort)
    if body.video:
        if not pipe.reads_clips:
            raise APIError(400, f"{s.cfg.model_name} was not trained on clips", param="video")
        if effort != "none" or body.best_of is not None:
            raise APIError(400, "clips are drawn without test-time effort", param="reasoning_effort")

        def work(job) -> None:
            job.emit(("drawings", [Drawing(clip, body.prompt) for clip in pipe.generate(
                body.prompt, body.n, "video", body.guidance_scale, body.seed, body.temperature)]))

        job, events = s.jobs.submit("draw", [], 0, sampling, work=work)
        drawings = await s.jobs.images(job, events, request)
    elif effort == "none" and body.best_of is None:
        drawn = pipe.vocab.modalities[pipe.vocab.drawn("image")]
        job, events = s.jobs.submit("draw", [ids] * body.n, drawn.tokens + 1, sampling)
        images = await s.jobs.images(job, events, request)
        note = await s.off_the_loop(pipe.scope, body.prompt)
        readings = await s.off_the_loop(lambda: [pipe.read_drawing(image) for image in images])
        drawings = [Drawing(image, body.prompt, reading=r, note=note) for image, r in zip(images, readings)]
    else:
        try:  # words outside the grammar, a contradiction, too many candidates: the client's mistake
            await s.off_the_loop(pipe.check_drawing_request, body.prompt, body.n, effort, body.best_of)
        except SmaltoError as e:
            raise APIError(400, str(e), param="prompt", code="invalid_prompt") from None

        def work(job) -> None:
            job.emit(("drawings", pipe.drawings(body.prompt, body.n, effort, body.best_of, body.seed,
                                                guidance=body.guidance_scale, temperature=body.temperature)))

        job, events = s.jobs.submit("draw", [], 0, sampling, work=work)
        drawings = await s.jobs.images(job, events, request)
    encode = (lambda x: clip_bytes(x, "GIF")) if body.video else png_bytes
    encoded = await asyncio.to_thread(lambda: [base64.b64encode(encode(d.image)).decode() for d in drawings])
    return p.ImagesResponse(created=int(time.time()), data=[
        p.ImageData(b64_json=b, mime_type="image/gif" if body.video else "image/png",
                    revised_prompt=d.prompt if d.prompt != body.prompt else None,
                    verdict=p.Verdict(**d.verdict.to_dict()) if d.verdict is not None else None,
                    reading=d.reading, note=d.note)
        for b, d in zip(encoded, drawings)])
