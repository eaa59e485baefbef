"""Clips over HTTP: animated GIF/WebP in chat (image_url or video_url parts), clips drawn by the
images endpoint, and the errors around them, with the official openai client."""

import base64

import httpx
import numpy as np
import openai
import pytest

import smalto
from smalto.pipeline import Message
from smalto.apps.serve import ServeConfig
from smalto.data.motion import MotionWorld
from smalto.data.video import clip_bytes, load_clip

from conftest import running_server

NAME = "clips-test"
SAMPLE = MotionWorld(seed=9)[1]


def clip_url(frames: np.ndarray, fmt: str = "GIF") -> str:
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(clip_bytes(frames, fmt)).decode()


@pytest.fixture(scope="module")
def clip_pipe(micro_clips):
    return smalto.load(micro_clips)


@pytest.fixture(scope="module")
def server(clip_pipe):
    with running_server(clip_pipe, ServeConfig(model_name=NAME)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def test_a_clip_in_chat_is_read_as_the_pipeline_reads_it(client, clip_pipe):
    question = "how many objects move?"
    expected = clip_pipe.chat([Message("user", question, images=[SAMPLE.frames])])
    for part in ({"type": "image_url", "image_url": {"url": clip_url(SAMPLE.frames)}},
                 {"type": "video_url", "video_url": {"url": clip_url(SAMPLE.frames, "WEBP")}}):
        r = client.chat.completions.create(model=NAME, messages=[
            {"role": "user", "content": [part, {"type": "text", "text": question}]}])
        assert r.choices[0].message.content == expected
        clip = clip_pipe.vocab.modalities["video"].tokens + 2
        assert r.usage.prompt_tokens == 2 + clip + len(clip_pipe.tokenizers.text.encode(question)) + 1


def test_clips_are_drawn_as_animated_gifs(client, clip_pipe):
    r = client.images.generate(model=NAME, prompt="a small red circle moves right slowly from the top left", n=2,
                               extra_body={"video": True, "seed": 3})
    frames = [load_clip(base64.b64decode(d.b64_json), 32) for d in r.data]
    assert all(f.shape == (7, 32, 32, 3) for f in frames) and r.data[0].model_extra["mime_type"] == "image/gif"
    expected = clip_pipe.generate("a small red circle moves right slowly from the top left", n=2, modality="video",
                                  seed=3)
    np.testing.assert_array_equal(frames[1], load_clip(clip_bytes(expected[1]), 32))  # the same clip, as a GIF


@pytest.mark.parametrize("frames, words", [(SAMPLE.frames[:3], "clips of 7 frames, got 3"),
                                           (np.concatenate([SAMPLE.frames] * 10), "over this server's limit of 64")])
def test_a_clip_the_model_cannot_read_is_400(server, frames, words):
    body = {"model": NAME, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": clip_url(frames)}}]}]}
    r = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400 and words in r.json()["error"]["message"], r.text
    corrupt = "data:image/gif;base64," + base64.b64encode(clip_bytes(SAMPLE.frames)[:100]).decode()
    body["messages"][0]["content"][0]["video_url"]["url"] = corrupt
    r = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.content.0.video_url"


def test_a_model_without_clips_refuses_them_clearly(micro_base):
    with running_server(smalto.load(micro_base), ServeConfig(model_name="pictures")) as url:
        r = httpx.post(f"{url}/v1/images/generations", json={"prompt": "a clip", "video": True}, timeout=60)
        assert r.status_code == 400 and "not trained on clips" in r.json()["error"]["message"]
        body = {"model": "pictures", "messages": [{"role": "user", "content": [{"type": "image_url",
                                                           "image_url": {"url": clip_url(SAMPLE.frames)}}]}]}
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 400 and "not trained on clips" in r.json()["error"]["message"]
