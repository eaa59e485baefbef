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


def test_a_model_that_never_heard_a_sound_refuses_one_and_makes_none(micro_base):
    import smalto

    with running_server(smalto.load(micro_base), ServeConfig(model_name="deaf")) as url:
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "deaf", "messages": heard(wav_bytes(WAVE), "hi")})
        made = httpx.post(f"{url}/v1/audio/speech", json={"model": "deaf", "voice": "shapes", "input": "a red circle"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "this model was not trained on sounds"
    assert made.status_code == 400 and made.json()["error"]["message"] == "deaf was not trained on sounds"


def test_speech_is_the_sound_the_model_makes_for_the_input_with_what_the_verifier_hears(server, pipe):
    import soundfile

    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    said = "a small red circle at the center"
    r = client.audio.speech.with_raw_response.create(model=NAME, voice="shapes", input=said, response_format="wav",
                                                     extra_body={"seed": 3})
    wave, rate = soundfile.read(io.BytesIO(r.content), dtype="float32")
    made = pipe.drawings(said, 1, None, None, 3, "audio")[0]
    assert rate == 16000 and wave.shape == made.image.shape == (21600,)
    np.testing.assert_allclose(wave, made.image, atol=1 / 16384)  # (16-bit PCM)
    assert r.headers["content-type"] == "audio/wav" and r.headers["x-smalto-reading"] == made.reading
    assert "x-smalto-verdict" not in r.headers, "no effort: nothing judged against the prompt"
    planned = client.audio.speech.with_raw_response.create(
        model=NAME, voice="shapes", input=said, response_format="flac", extra_body={"seed": 3,
                                                                                  "reasoning_effort": "low"})
    verdict = __import__("json").loads(planned.headers["x-smalto-verdict"])
    assert set(verdict) == {"satisfied", "score", "failed"} and planned.headers["content-type"] == "audio/flac"
    assert soundfile.read(io.BytesIO(planned.content))[0].shape == (21600,)


@pytest.mark.parametrize("change, param, says", [
    ({"voice": "alloy"}, "voice", "one voice, 'shapes'"),
    ({"response_format": "mp3"}, "response_format", "'mp3' is not available"),
    ({"speed": 2.0}, "speed", "one speed"),
    ({"input": "a red circle", "model": "gpt-4o-mini-tts"}, "model", "does not exist"),
])
def test_speech_the_model_cannot_make_is_a_400_naming_the_field(server, change, param, says):
    r = httpx.post(f"{server}/v1/audio/speech", json={"model": NAME, "voice": "shapes", "input": "a red circle",
                                                      **change})
    assert r.status_code in (400, 404) and says in r.json()["error"]["message"] and r.json()["error"]["param"] == param


def test_transcriptions_are_the_recognisers_and_name_it(server):
    from smalto.data.speech import SpeechWorld
    from smalto.verify.recogniser import Recogniser, words

    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [NAME, "smalto-recogniser"]
    spoken = SpeechWorld(seed=1, split="unseen")[0]
    data = wav_bytes(spoken.wave)
    r = client.audio.transcriptions.create(model="smalto-recogniser", file=("said.wav", data))
    assert r.text == Recogniser.load().transcribe([spoken.wave])[0] == " ".join(words(spoken.text))
    text = client.audio.transcriptions.create(model="smalto-recogniser", file=("said.wav", data),
                                              response_format="text")
    assert text == r.text + "\n"
    with pytest.raises(openai.BadRequestError, match="does not recognise speech yet"):
        client.audio.transcriptions.create(model=NAME, file=("said.wav", data))
    with pytest.raises(openai.BadRequestError, match="'junk.wav': not a sound file"):
        client.audio.transcriptions.create(model="smalto-recogniser",
                                           file=("junk.wav", b"RIFF\x00\x00\x00\x00WAVEjunk"))
    with pytest.raises(openai.BadRequestError, match="61.0 s long"):
        client.audio.transcriptions.create(model="smalto-recogniser",
                                           file=("long.wav", wav_bytes(np.zeros(16000 * 61, np.float32))))
