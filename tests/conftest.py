"""Shared fixtures: the shipped model, loaded once, a micro model trained for seconds, and real
HTTP servers on loopback."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

import smalto
from smalto.apps.serve import ServeConfig, create_app

from hostile import bomb_png


@pytest.fixture(scope="session")
def shipped():
    return smalto.load()


@pytest.fixture(scope="session")
def micro_base(tmp_path_factory):
    """A shapes-micro checkpoint trained for 8 steps on ShapesWorld: a base to fine-tune or train
    by RL in seconds (tests must not change it)."""
    from smalto.training.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("micro") / "base"
    train(out, TrainConfig(preset="shapes-micro", steps=8, batch_size=8, warmup=2, eval_every=0, save_every=8,
                           precision="fp32"), progress=False)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"no server answered at {url}")


@contextmanager
def running_server(pipe, cfg: ServeConfig):
    """A real uvicorn server in a thread; yields its base URL, stops it (gracefully) on exit."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(pipe, cfg), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def bomb() -> bytes:
    return bomb_png(12000, 12000)


@pytest.fixture(scope="session")
def video_tokenizers(tmp_path_factory):
    """The shipped text and image tokenizers with an untrained (seeded) small video tokenizer beside them."""
    import torch

    from smalto.tokenizers import load_tokenizers
    from smalto.tokenizers.video import VideoTokenizer, VideoTokenizerConfig

    out = tmp_path_factory.mktemp("tokenizers") / "video"
    shipped = load_tokenizers()
    shipped.copy_to(out)
    torch.manual_seed(0)
    VideoTokenizer(shipped.image, VideoTokenizerConfig(width=16, blocks=1)).save(out)
    return out


@pytest.fixture(scope="session")
def micro_clips(tmp_path_factory, video_tokenizers):
    """A shapes-micro checkpoint with M-RoPE trained for 6 steps on pictures and clips."""
    from smalto.training.data import TaskMix
    from smalto.training.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("micro") / "clips"
    mix = TaskMix(caption=1, draw=1, qa=1, clip_caption=1, clip_draw=1, clip_qa=1, clip_next=1)
    train(out, TrainConfig(preset="shapes-micro", tokenizers=str(video_tokenizers), steps=6, batch_size=8, warmup=2,
                           eval_every=0, save_every=6, precision="fp32", rope="mrope", context=384, mix=mix),
          progress=False)
    return out
