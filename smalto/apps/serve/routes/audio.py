"""OpenAI's audio endpoints.

POST /v1/audio/speech: the sound the model makes for `input` (a model trained on sounds): text ->
sound, with test-time effort as for pictures. smalto's model does not speak words yet; what it
makes is the sound of the ShapesWorld scene the text describes (docs/audio.md), one voice,
"shapes". The response is the audio file; `X-Smalto-Reading` says what the sound verifier hears
in it (what came out, not the plan), and with effort `X-Smalto-Verdict` whether it satisfies it
(header values percent-encoded where they are not printable ASCII).

POST /v1/audio/transcriptions: speech to text by the recogniser (`smalto.verify.recogniser`: a
small CTC model trained here on espeak-ng speech over the 41 words of ShapesWorld's captions),
named `smalto-recogniser` in /v1/models; it is a model apart from the served one, which does not
recognise speech yet, and the reply names it.
"""

from __future__ import annotations

import asyncio
import io
import json
from functools import cache
from typing import Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response

from smalto.apps.serve import protocol as p
from smalto.apps.serve.errors import APIError, context_code
from smalto.apps.serve.state import BEARER, ERRORS, Server, effort_of, server
from smalto.data.gate import read_sound
from smalto.errors import SmaltoError

router = APIRouter()

RECOGNISER = "smalto-recogniser"
VOICE = "shapes"
MEDIA = {"wav": "audio/wav", "flac": "audio/flac", "pcm": "audio/pcm"}


@cache
def recogniser():
    from smalto.verify.recogniser import Recogniser

    return Recogniser.load()


def encode(wave, rate: int, fmt: str) -> bytes:
    """A float wave as a WAV or FLAC file (16-bit), or raw 16-bit little-endian PCM."""
    import numpy as np
    import soundfile

    if fmt == "pcm":
        return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()
    out = io.BytesIO()
    soundfile.write(out, wave, rate, subtype="PCM_16", format=fmt.upper())
    return out.getvalue()


@router.post("/v1/audio/speech", responses={**ERRORS, 200: {"content": {m: {} for m in MEDIA.values()}}},
             response_class=Response, dependencies=[Depends(BEARER)], tags=["audio"])
async def audio_speech(body: p.SpeechRequest, request: Request, s: Server = Depends(server)):
    s.check_model(body.model)
    pipe = s.pipe
    if not pipe.hears:
        raise APIError(400, f"{s.cfg.model_name} was not trained on sounds", param="model")
    if body.voice not in (None, VOICE):
        raise APIError(400, f"this model has one voice, {VOICE!r} (the sound of the scene the input describes; it "
                            f"does not speak words yet)", param="voice", code="unsupported_voice")
    if body.response_format not in MEDIA:
        raise APIError(400, f"response_format {body.response_format!r} is not available; use "
                            f"{', '.join(MEDIA)}", param="response_format", code="unsupported_format")
    if body.speed != 1.0:
        raise APIError(400, "a scene's sound has one speed (speed 1.0)", param="speed")
    try:
        await s.off_the_loop(pipe.text_ids, body.input)
        effort = effort_of(body.reasoning_effort)  # (an empty input; with effort, words outside the world)
        await s.off_the_loop(pipe.check_drawing_request, body.input, 1, effort, None)
    except SmaltoError as e:
        raise APIError(400, str(e), param="input", code=context_code(e)) from None
    sampling = pipe.draw_sampling(body.seed, guidance=body.guidance_scale, temperature=body.temperature)

    def work(job) -> None:
        job.emit(("drawings", pipe.drawings(body.input, 1, effort, None, body.seed, "audio",
                                            guidance=body.guidance_scale, temperature=body.temperature)))

    job, events = s.jobs.submit("draw", [], 0, sampling, work=work)
    made = (await s.jobs.images(job, events, request))[0]
    audio = await asyncio.to_thread(encode, made.image, pipe.sample_rate, body.response_format)
    headers = {"X-Smalto-Reading": header(made.reading or "")}
    if made.verdict is not None:
        headers["X-Smalto-Verdict"] = header(json.dumps(made.verdict.to_dict()))
    if made.note:
        headers["X-Smalto-Note"] = header(made.note)
    return Response(audio, media_type=MEDIA[body.response_format], headers=headers)


def header(text: str) -> str:
    """A header value: UTF-8, percent-encoded where it is not printable ASCII (a note quotes the
    client's own words, which may be any text; a newline must not end the header)."""
    return quote(text, safe=" !\"#$&'()*+,/:;<=>?@[]^_`{|}~")


@router.post("/v1/audio/transcriptions", response_model=p.Transcription, responses=ERRORS,
             dependencies=[Depends(BEARER)], tags=["audio"])
async def audio_transcriptions(file: UploadFile = File(description="WAV, FLAC or OGG speech, at most 60 s"),
                               model: str = Form(description=f"{RECOGNISER!r}"),
                               response_format: Literal["json", "text", "verbose_json", "srt", "vtt"] = Form("json"),
                               language: str | None = Form(None), prompt: str | None = Form(None),
                               temperature: float | None = Form(None), s: Server = Depends(server)):
    if model != RECOGNISER:
        raise APIError(400 if model == s.cfg.model_name else 404,
                       f"{model!r} does not recognise speech" + (" yet" if model == s.cfg.model_name else "")
                       + f"; transcriptions are made by {RECOGNISER!r}", param="model", code="model_not_found")
    if response_format not in ("json", "text"):
        raise APIError(400, f"response_format {response_format!r} is not available; use json or text",
                       param="response_format", code="unsupported_format")
    if language not in (None, "en"):
        raise APIError(400, f"{RECOGNISER} hears English only", param="language", code="unsupported_language")
    hear = recogniser()
    data = await file.read()
    try:
        wave = await s.off_the_loop(read_sound, data, f"file {file.filename!r}", hear.cfg.sample_rate)
    except SmaltoError as e:
        raise APIError(400, str(e), param="file", code="invalid_audio") from None
    text = (await s.off_the_loop(hear.transcribe, [wave]))[0]
    if response_format == "text":
        return PlainTextResponse(text + "\n")
    return p.Transcription(text=text)
