"""`smalto chat`, driven as a subprocess through its stdin."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from smalto.data import ShapesWorld
from smalto.plots import save_png

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SAMPLE = ShapesWorld(seed=31)[5]


def chat(lines: list[str], cwd, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smalto", "chat", *args], input="\n".join(lines) + "\n", cwd=cwd,
                          env=ENV, capture_output=True, text=True, timeout=300)


def replies(out: str) -> list[str]:
    return [line.split("smalto › ", 1)[1] for line in out.splitlines() if "smalto › " in line]


def test_a_conversation_about_an_image_and_a_drawing(shipped, tmp_path):
    save_png(tmp_path / "scene.png", SAMPLE.image)
    question = SAMPLE.qa[1]["q"]
    r = chat(["/help", "/image scene.png", "", question, "/draw a small red circle at the center --n 2 --seed 3",
              "/quit", "this line is never read"], tmp_path, "--preview", "never")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "/image PATH" in r.stdout and "/draw PROMPT" in r.stdout  # the help
    caption, answer = replies(r.stdout)[:2]
    assert caption == shipped.caption(SAMPLE.image)
    # the question follows the caption in the same conversation
    from smalto.pipeline import Message
    assert answer == shipped.chat([Message("user", "", [SAMPLE.image]), Message("assistant", caption),
                                   Message("user", question)])
    saved = sorted((tmp_path / "drawings").glob("*.png"))
    expected = shipped.generate_image("a small red circle at the center", n=2, seed=3)
    assert [p.name for p in saved] == ["draw-0001.png", "draw-0002.png"]
    assert all(np.array_equal(np.asarray(Image.open(p)), e) for p, e in zip(saved, expected))
    assert len(replies(r.stdout)) == 2  # nothing after /quit


def test_mistakes_are_reported_and_the_chat_goes_on(tmp_path):
    r = chat(["/image missing.png", "/image", "/draw a red circle --n 99", "/draw --seed", "/draw --n x red",
              "/draw red --guidance nan", "/draw red --seed -3", "/frobnicate",
              "/draw a small blue square at the top left --n 1"], tmp_path, "--preview", "never", "--out", "pics")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    out = r.stdout
    assert "error: missing.png: image file not found" in out
    assert "error: give an image file" in out
    assert "--n must be an integer in [1, 16], got 99" in out and "--seed needs a value" in out
    assert "guidance must be a number in [0, 20], got nan" in out and "seed must be an integer in [0, " in out
    assert "--n and --seed take whole numbers" in out and "unknown command /frobnicate" in out
    assert [p.name for p in (tmp_path / "pics").glob("*.png")] == ["draw-0001.png"]  # ended by EOF, no /quit


def test_images_are_previewed_in_colour_when_asked(tmp_path):
    save_png(tmp_path / "scene.png", SAMPLE.image)
    r = chat(["/image scene.png", "/quit"], tmp_path, "--preview", "always")
    assert r.returncode == 0
    top, bottom = SAMPLE.image[0, 0], SAMPLE.image[1, 0]
    assert f"\x1b[38;2;{top[0]};{top[1]};{top[2]}m\x1b[48;2;{bottom[0]};{bottom[1]};{bottom[2]}m▀" in r.stdout
    assert r.stdout.count("▀") == 32 * 16  # two pixel rows per line


def test_bad_options_are_clear_errors(tmp_path):
    r = chat([], tmp_path, "--temperature", "-1")
    assert r.returncode == 2 and "smalto: error: argument --temperature: must be a number in [0, 2]" in r.stderr


def test_a_long_conversation_forgets_early_turns_but_keeps_the_image(tmp_path):
    save_png(tmp_path / "scene.png", SAMPLE.image)
    questions = [qa["q"] for qa in SAMPLE.qa] * 6  # (enough turns to fill the context whatever the replies)
    r = chat(["/image scene.png", *questions], tmp_path, "--preview", "never")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "the context is full" in r.stdout and "error" not in r.stdout
    assert len(replies(r.stdout)) == len(questions)  # every question was answered


def test_effort_shows_the_thinking_then_the_answer_and_judges_drawings(shipped, tmp_path):
    save_png(tmp_path / "scene.png", SAMPLE.image)
    r = chat(["/effort medium", "/image scene.png", "what color is the square?", "/effort extreme",
              "/draw a small red circle left of a large blue square --n 1 --seed 2"], tmp_path, "--preview", "never")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    expected = shipped.reply_batch([SAMPLE.image], ["what color is the square?"], effort="medium")[0]
    reply = r.stdout.split("smalto › ", 1)[1]
    assert reply.startswith(f"(thinking) {expected.reasoning}") and f"\n  {expected.text}\n" in reply
    assert "effort must be one of none, low, medium, high" in r.stdout  # a bad level keeps the old one
    assert "#1: " in r.stdout and ("matches the prompt" in r.stdout or "still fails" in r.stdout)


@pytest.mark.slow  # two more chat processes; the pipeline's chat with clips is tested in test_video_serve.py
def test_a_clip_starts_a_conversation_with_a_model_that_reads_clips(micro_clips, micro_base, tmp_path):
    import smalto
    from smalto.data.motion import MotionWorld
    from smalto.data.video import load_clip, save_clip
    from smalto.pipeline import Message

    frames = MotionWorld(seed=5)[2].frames
    save_clip(frames, tmp_path / "clip.gif")
    r = chat(["/image clip.gif", "how many objects move?"], tmp_path, "--preview", "never", "--model", micro_clips)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    pipe = smalto.load(micro_clips)
    clip = load_clip(tmp_path / "clip.gif", 32)
    assert replies(r.stdout)[0] == pipe.chat([Message("user", "how many objects move?", [clip])])
    r = chat(["/image clip.gif"], tmp_path, "--preview", "never", "--model", micro_base)  # trained on pictures
    assert "was not trained on clips" in r.stdout
