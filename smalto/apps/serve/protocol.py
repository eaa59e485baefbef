"""The OpenAI wire format: request and response bodies as pydantic models.

These models are the validation of every request and the source of `/openapi.json`, so the schema
describes exactly what the server accepts and returns. Unknown fields are refused (a client that
sends `tools` or `logprobs` should hear that they are not supported, not be silently ignored).
Sampling options are checked by `smalto.options`, the same rule the CLI and the Python API use.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from smalto import options
from smalto.errors import SmaltoError

MAX_CHOICES = 8
MAX_IMAGES = 10
# OpenAI's reasoning_effort values; "minimal" is read as smalto's "low" (see smalto.effort).
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high"]
EFFORT_HELP = ("Test-time compute: 'none' answers at once; 'low' thinks when unsure; 'medium' always thinks; "
               "'high' too. Drawings: planned by the solver, best of 2 / 4 / 16. See docs/test-time.md.")


def sampling(name: str, description: str | None = None):
    """An optional sampling option (None: the model's default), checked by `smalto.options`."""
    valid = options.SAMPLING[name]

    def check(value):
        try:
            return options.check(name, value)
        except SmaltoError:  # the message names the field as the client spelled it (see app.py)
            raise ValueError(f"must be {valid.describe()}, got {value!r}") from None

    kind = int if valid.integer else float
    # Before pydantic's own parsing, so that nan, 0.5 for an integer, or "1" get the same words.
    return Annotated[kind | None, BeforeValidator(check),
                     Field(description=description, json_schema_extra=valid.json_schema())]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors

class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# --- chat

class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImageURL(Strict):
    url: str = Field(description="A data URL (data:image/png;base64,...). http(s) URLs are not fetched.")
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageURL


class VideoURL(Strict):
    url: str = Field(description="A data URL of an animated GIF or WebP (data:image/gif;base64,...).")


class VideoPart(Strict):
    """Extension: a clip. An animated GIF or WebP in an image_url part is read as a clip too."""
    type: Literal["video_url"]
    video_url: VideoURL


class InputAudio(Strict):
    data: str = Field(description="The sound file's bytes, base64-encoded.")
    format: Literal["wav", "flac", "ogg"] = Field(description="Its format (what libsndfile reads).")


class AudioPart(Strict):
    """A sound, as OpenAI's input_audio content part (a model trained on sounds)."""
    type: Literal["input_audio"]
    input_audio: InputAudio


ContentPart = Annotated[Union[TextPart, ImagePart, VideoPart, AudioPart], Field(discriminator="type")]


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(Strict):
    include_usage: bool = False


class ChatCompletionRequest(Strict):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    temperature: sampling("temperature", "None: the model's default (greedy).") = None
    top_p: sampling("top_p") = None
    top_k: sampling("top_k", "Extension: sample among the k most likely tokens.") = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = Field(None, description="Up to 4 strings; the reply ends before the first.")
    seed: sampling("seed") = None
    user: str | None = None
    reasoning_effort: ReasoningEffort | None = Field(None, description=EFFORT_HELP)
    best_of: sampling("best_of", "Extension: answers sampled and voted (self-consistency).") = None


AnsweredBy = Literal["model", "solver"]
ANSWERED_BY_HELP = ("Extension, with reasoning_effort: who produced the answer: 'model' (its own tokens) or 'solver' "
                    "(computed by the symbolic core from the model's own description of the picture).")


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str | None = Field(None, description="The thinking before the answer, when it thought.")
    refusal: None = None
    answered_by: AnsweredBy | None = Field(None, description=ANSWERED_BY_HELP)


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    answered_by: AnsweredBy | None = None  # in the choice's last delta, with effort (see AssistantMessage)


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    """One `data:` line of a streamed reply (text/event-stream, closed by `data: [DONE]`)."""
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]
    usage: Usage | None = None


# --- images

class ImageGenerationRequest(Strict):
    prompt: str = Field(min_length=1, max_length=4000)
    model: str | None = None
    n: int = Field(1, ge=1, le=MAX_IMAGES)
    size: str | None = Field(None, description="The model's native size (e.g. 32x32), or 'auto'.")
    response_format: Literal["b64_json", "url"] = "b64_json"
    seed: sampling("seed", "Extension: the same seed draws the same images.") = None
    guidance_scale: sampling("guidance", "Extension: classifier-free guidance (None: the model's default).") = None
    temperature: sampling("temperature", "Extension: sampling temperature of the codes.") = None
    user: str | None = None
    reasoning_effort: ReasoningEffort | None = Field(None, description="Extension: " + EFFORT_HELP)
    best_of: sampling("best_of", "Extension: candidates per image, the verifier's best kept.") = None
    video: bool = Field(False, description="Extension: draw clips (a model trained on clips); b64_json then "
                                           "holds an animated GIF.")


class Verdict(BaseModel):
    satisfied: bool
    score: float = Field(description="Share of the prompt's constraints the image satisfies.")
    failed: list[str] = Field(description="The constraints it does not satisfy, in words.")


class ImageData(BaseModel):
    b64_json: str
    mime_type: str = Field("image/png", description="Extension: image/png, or image/gif for a clip.")
    revised_prompt: str | None = Field(None, description="The solver's plan, when it rewrote the prompt.")
    verdict: Verdict | None = Field(None, description="Extension: the verifier's judgement of the image.")
    reading: str | None = Field(None, description="Extension: what the pixel verifier reads in the image, "
                                                  "as a caption (what came out; revised_prompt is the plan).")
    note: str | None = Field(None, description="Extension: why the prompt lies outside the world the model knows.")


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]


# --- audio

class SpeechRequest(Strict):
    input: str = Field(min_length=1, max_length=4000, description="What to make the sound of: a scene in words.")
    model: str | None = None
    voice: str | None = Field(None, description="'shapes', the one voice: the sound of the scene (docs/audio.md).")
    response_format: Literal["wav", "flac", "pcm", "mp3", "opus", "aac"] = Field(
        "wav", description="wav, flac or pcm (16-bit little-endian at the model's sample rate, 16 kHz).")
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(None, max_length=4000, description="Read and ignored.")
    seed: sampling("seed", "Extension: the same seed makes the same sound.") = None
    guidance_scale: sampling("guidance", "Extension: classifier-free guidance (None: the model's default).") = None
    temperature: sampling("temperature", "Extension: sampling temperature of the codes.") = None
    reasoning_effort: ReasoningEffort | None = Field(None, description="Extension: " + EFFORT_HELP)


class Transcription(BaseModel):
    text: str


# --- models

class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "smalto"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "draining"]
    model: str
    queued: int
    max_queue: int
    served: int
