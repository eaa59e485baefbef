"""Reading a request: data-URL images and clips, base64 sounds (sizes checked before decoding),
messages, stop strings."""

from __future__ import annotations

import base64
import binascii

import numpy as np

from smalto.apps.serve import protocol as p
from smalto.apps.serve.errors import APIError
from smalto.data.gate import MAX_SECONDS, SOUND_MAGIC, Budget, ClipTooLong, ImageTooLarge, OverBudget, read_sound
from smalto.data.images import load_image
from smalto.data.video import frame_count, load_clip
from smalto.errors import SmaltoError
from smalto.pipeline import Message


def decode_image(url: str, param: str, size: int, max_pixels: int | None, budget: Budget,
                 clip: bool = False) -> np.ndarray:
    """A data URL's image as uint8 [size, size, 3], or an animation's frames [T, size, size, 3] (always,
    with `clip`); its declared size, frame count and pixels (charged to the request's `budget`) are
    checked before decoding."""
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
        if clip or frame_count(raw) > 1:
            return load_clip(raw, size, max_pixels, name="the clip", budget=budget)
        return load_image(raw, size, max_pixels, name="the image", budget=budget)
    except ImageTooLarge as e:
        raise APIError(400, f"the image is {e.width}×{e.height} pixels, over this server's limit of "
                            f"{e.limit:,} pixels", param=param, code="invalid_image") from None
    except OverBudget as e:
        raise APIError(400, f"the request's images and clips would decode {e.pixels:,} pixels, over this server's "
                            f"budget of {e.limit:,} per request", param=param, code="invalid_image") from None
    except ClipTooLong as e:
        raise APIError(400, f"the clip has {e.frames} frames, over this server's limit of {e.limit}", param=param,
                       code="invalid_image") from None
    except SmaltoError as e:  # the gate's one line: what is wrong with it
        raise APIError(400, f"{e} (images: PNG, JPEG, WebP, GIF, BMP; clips: animated GIF or WebP)", param=param,
                       code="invalid_image") from None


# A sound's base64 may hold MAX_SECONDS of 16-bit stereo at 48 kHz (its header's duration is
# checked again before decoding, against the gate's limits).
MAX_SOUND_BASE64 = int(MAX_SECONDS * 48_000 * 2 * 2 * 4 / 3) + 1024


def decode_audio(part: p.InputAudio, param: str, sample_rate: int) -> np.ndarray:
    """An input_audio part's sound as float32 mono [samples] at `sample_rate`; its size, header and
    duration are checked before decoding."""
    if len(part.data) > MAX_SOUND_BASE64:
        raise APIError(400, f"the sound is over {MAX_SOUND_BASE64:,} base64 characters (about {MAX_SECONDS:g} s)",
                       param=param, code="invalid_audio")
    try:
        raw = base64.b64decode(part.data, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "the sound's data is not valid base64", param=param, code="invalid_base64") from None
    if raw[:4] not in SOUND_MAGIC:
        raise APIError(400, f"the sound is not a {part.format} file (sounds: WAV, FLAC or OGG)", param=param,
                       code="invalid_audio")
    try:
        return read_sound(raw, "the sound", sample_rate)
    except SmaltoError as e:
        raise APIError(400, str(e), param=param, code="invalid_audio") from None


def count_images(messages: list[p.ChatMessage]) -> int:
    """Images, clips and sounds."""
    return sum(isinstance(part, (p.ImagePart, p.VideoPart, p.AudioPart)) for m in messages
               if isinstance(m.content, list) for part in m.content)


def to_messages(messages: list[p.ChatMessage], size: int, max_pixels: int | None,
                budget: int | None = None, sample_rate: int | None = None) -> list[Message]:
    """The request's messages, with every image decoded and converted to the model's size; all of
    them together may decode `budget` pixels (default: four pictures at `max_pixels`); sounds are
    read at `sample_rate` (None: the model hears none, and a sound is refused)."""
    budget = Budget(budget) if budget is not None else Budget.for_one(max_pixels)
    out = []
    for i, m in enumerate(messages):
        if m.content is None or isinstance(m.content, str):
            out.append(Message(m.role, m.content or ""))
            continue
        texts, images = [], []
        for j, part in enumerate(m.content):
            if isinstance(part, p.TextPart):
                texts.append(part.text)
            elif isinstance(part, p.AudioPart):
                where = f"messages.{i}.content.{j}.input_audio"
                if m.role != "user":
                    raise APIError(400, f"sounds are only accepted in user messages, not {m.role}", param=where)
                if sample_rate is None:
                    raise APIError(400, "this model was not trained on sounds", param=where, code="invalid_audio")
                images.append(decode_audio(part.input_audio, where, sample_rate))
            else:
                video = isinstance(part, p.VideoPart)
                where = f"messages.{i}.content.{j}.{'video_url' if video else 'image_url'}"
                if m.role != "user":
                    raise APIError(400, f"images are only accepted in user messages, not {m.role}", param=where)
                url = part.video_url.url if video else part.image_url.url
                images.append(decode_image(url, where, size, max_pixels, budget, clip=video))
        out.append(Message(m.role, " ".join(t.strip() for t in texts if t.strip()), images))
    return out


def stop_strings(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4 or any(not s for s in stops):
        raise APIError(400, "stop takes up to 4 non-empty strings", param="stop")
    return stops
