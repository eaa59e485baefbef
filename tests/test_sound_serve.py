"""Sounds over HTTP: OpenAI's input_audio content parts through the official client, and the
errors a bad sound gets (the web UI attaching and playing one: tests/test_ui.py)."""

import base64
import io

import httpx
import numpy as np
import openai
import pytest
import torch

from smalto.apps.serve import ServeConfig
from smalto.data.sounds import SoundConfig, SoundWorld, write_wav
from smalto.format import Vocab
from smalto.model import Transformer, preset
from smalto.pipeline import Message, Pipeline
from smalto.tokenizers import load_tokenizers

from conftest import running_server

NAME = "sound-test"
WAVE = SoundWorld(SoundConfig(), 3, "train")[1].wave


def wav_bytes(wave: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    import soundfile

    soundfile.write(buffer, wave, rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def heard(data: bytes, question: str, fmt: str = "wav") -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}},
        {"type": "text", "text": question}]}]


def hearing_pipeline() -> Pipeline:
    """An untrained shapes-micro model that hears delayed sounds of four levels."""
    tok = load_tokenizers()
    vocab = Vocab.from_tokenizers(tok, sound=(54, 4), pattern="delay")
    torch.manual_seed(1)
    return Pipeline(Transformer(preset("shapes-micro", vocab.size, max_seq_len=256)).eval(), vocab, tok, sounds=True)


@pytest.fixture(scope="module")
def pipe():
    return hearing_pipeline()


@pytest.fixture(scope="module")
def server(pipe):
    with running_server(pipe, ServeConfig(model_name=NAME)) as url:
        yield url


def test_a_sound_in_chat_is_heard_as_the_pipeline_hears_it(server, pipe, tmp_path):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    path = tmp_path / "scene.wav"
    write_wav(path, WAVE, 16000)
    r = client.chat.completions.create(model=NAME, messages=heard(path.read_bytes(), "how many circles are there?"))
    assert r.choices[0].message.content == pipe.chat([Message("user", "how many circles are there?", images=[path])])
    assert r.usage.prompt_tokens == 1 + 1 + 59 + len(pipe.tokenizers.text.encode("how many circles are there?")) + 1


@pytest.mark.parametrize("data, fmt, status, says", [
    (b"RIFF\x00\x00\x00\x00WAVEjunk", "wav", 400, "not a sound file"),
    (b"\x89PNG\r\n\x1a\n", "wav", 400, "not a wav file"),
    (wav_bytes(np.zeros(16000 * 3, np.float32)), "wav", 400, "3.00 s long"),
])
def test_a_sound_the_model_cannot_hear_is_a_400_naming_it(server, data, fmt, status, says):
    r = httpx.post(f"{server}/v1/chat/completions", json={"model": NAME, "messages": heard(data, "what is it?", fmt)})
    assert r.status_code == status and says in r.json()["error"]["message"], r.text
    assert r.json()["error"]["param"].startswith("messages")
    bad = heard(b"x", "what is it?")
    bad[0]["content"][0]["input_audio"]["data"] = "not base64!"
    assert httpx.post(f"{server}/v1/chat/completions", json={"model": NAME, "messages": bad}).json()["error"][
        "code"] == "invalid_base64"


def test_a_model_that_never_heard_a_sound_refuses_one(micro_base):
    import smalto

    with running_server(smalto.load(micro_base), ServeConfig(model_name="deaf")) as url:
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "deaf", "messages": heard(wav_bytes(WAVE), "hi")})
    assert r.status_code == 400 and r.json()["error"]["message"] == "this model was not trained on sounds"
