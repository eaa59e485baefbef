"""The README as a newcomer meets it (issue 27): every command in it and every Python block, parsed
out of the README itself and run as written from a directory holding a copy of examples/. The
training commands alone get a few steps appended (argparse keeps the last value of a flag), so
they run in seconds rather than the minutes the README says they take."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent
# What each long-running training command gets appended: the same command, a few steps.
SHORT = {("data", "shapes"): ["--n", "40"], ("tokenizer", "train"): ["--steps", "3", "--eval-images", "16"],
         ("train",): ["--steps", "2", "--batch-size", "4", "--eval-every", "0"],
         ("finetune",): ["--steps", "2", "--batch-size", "4"],
         ("rl",): ["--steps", "1", "--prompts", "2", "--group", "2", "--eval-every", "0"],
         ("tokenizer", "train-audio"): ["--steps", "3", "--unquantised", "1", "--batch-size", "2", "--eval-sounds", "2",
                                        "--width", "4", "--latent-dim", "8"],
         ("recogniser", "train"): ["--utterances", "8", "--epochs", "1", "--eval-utterances", "2", "--width", "16"]}


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end >= 0 else None]


def blocks(lang: str, title: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section(title), re.S)


def commands(title: str) -> list[list[str]]:
    return [argv for block in blocks("sh", title) for line in block.splitlines()
            if (argv := shlex.split(line, comments=True))]


@pytest.fixture
def here(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


def run(argv: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    assert argv[0] in ("smalto", "python"), argv
    exe = str(BIN / "smalto") if argv[0] == "smalto" else sys.executable
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([exe, *argv[1:]], cwd=cwd, capture_output=True, text=True, env=env, timeout=600, **kwargs)


def test_the_readme_is_a_landing_page():
    assert len(README.splitlines()) <= 200
    for link in re.findall(r"\]\(((?:docs|examples)/[^)#]*)", README):
        assert (ROOT / link).exists(), link
    assert commands("Two commands") == [["make", "demo"], ["make", "test"]]  # (what CI itself runs)


def test_use_it_runs_as_written(here):
    for argv in commands("Use it"):
        r = run(argv, here)
        assert r.returncode == 0, (argv, r.stderr[-2000:])
        assert r.stdout.strip(), argv  # every command says what it did
    for out in ("circles.png", "planned.png", "next.gif", "clip.gif", "heard.wav"):
        assert (here / out).stat().st_size > 0, out
    python, = blocks("python", "Use it")
    r = run(["python", "-c", python], here)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(r.stdout.splitlines()) == 6, r.stdout


def test_train_your_own_runs_as_written_in_a_few_steps(here):
    for argv in commands("Train your own"):
        extra = next((v for k, v in SHORT.items() if tuple(argv[1:1 + len(k)]) == k), [])
        r = run(argv + extra, here)
        assert r.returncode == 0, (argv, r.stderr[-2000:])


def test_serve_it_runs_as_written(here):
    serve, chat = commands("Serve it")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    python, = blocks("python", "Serve it")
    server = subprocess.Popen([str(BIN / "smalto"), *serve[1:], "--port", str(port)], cwd=here,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "the server did not start"
                time.sleep(0.5)
        r = run(["python", "-c", python.replace("127.0.0.1:8000", f"127.0.0.1:{port}")], here)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip().startswith("a "), r.stdout  # a caption of examples/scene.png
    finally:
        server.terminate()
        server.wait(30)
    r = run(chat, here, input="hello\n/quit\n")
    assert r.returncode == 0 and "hi!" in r.stdout, (r.stdout, r.stderr)
