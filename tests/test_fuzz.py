"""Fuzzing the parsers a user reaches: each either accepts its input or refuses it with a
SmaltoError (the one-line error of the CLI, a 400 over HTTP), never another exception. Brief in
`make test`, twenty times longer in `make test-slow`; the server's schema is fuzzed in
test_serve_fuzz.py."""

import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from smalto.data.folder import _parse_clip_line, _parse_line
from smalto.data.images import load_image
from smalto.data.shapes import Scene, parse_caption
from smalto.data.video import load_clip
from smalto.errors import SmaltoError
from smalto.verify.spec import parse_prompt, parse_question

from hostile import corrupt_gif, frame_bomb_gif, huge_gif, huge_webp

# Examples per parser: `make test`, and `make test-slow`.
EXAMPLES = [150, pytest.param(3000, marks=pytest.mark.slow)]
WORDS = st.sampled_from(["a", "small", "large", "red", "blue", "circle", "square", "at", "the", "top", "left",
                         "center", "and", ",", "left of", "above", "is", "there", "what", "color", "how", "many",
                         "?", "no", "two", "objects", "\ud800", "Ω", "", "0", "-1", "1e309"])
PHRASES = st.lists(WORDS, max_size=24).map(" ".join) | st.text(max_size=80)

# JSON values of every kind, nested a little, with the numbers that break naive readers
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                           st.sampled_from(["image", "clip", "text", "qa", "q", "a", "scene", "objects", "shape",
                                            "color", "size", "row", "col", "motion", "frames", "x", "y", "dx", "dy",
                                            "label"]), inner, max_size=6), max_leaves=24)


def _refused_or_fine(parse, value) -> None:
    try:
        parse(value)
    except SmaltoError:
        pass


def fuzz(examples: int, *strategies):
    """Run the decorated check on `examples` inputs drawn from the strategies."""
    def run(check):
        # (the brief run draws the same inputs every time, so CI is not flaky; the long one explores)
        settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                 derandomize=examples == EXAMPLES[0])(given(*strategies)(check))()
    return run


@pytest.mark.parametrize("examples", EXAMPLES)
def test_prompts_questions_and_captions_parse_or_are_refused(examples):
    @fuzz(examples, PHRASES)
    def check(text):
        _refused_or_fine(parse_prompt, text)
        _refused_or_fine(parse_question, text)
        scene = parse_caption(text)  # None, or a scene: never an exception
        assert scene is None or isinstance(scene, Scene) and scene.objects


@pytest.mark.parametrize("examples", EXAMPLES)
def test_folder_lines_parse_or_name_their_line(examples):
    @fuzz(examples, JSONISH, st.booleans())
    def check(record, clip):
        line = json.dumps(record, allow_nan=True) if not isinstance(record, str) else record
        try:
            (_parse_clip_line if clip else _parse_line)(line, "data.jsonl:9")
        except SmaltoError as e:
            assert str(e).startswith("data.jsonl:9: ")


def _real(fmt: str) -> bytes:
    frames = [Image.fromarray(np.full((32, 32, 3), 60 * k, np.uint8)) for k in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=100)
    return buf.getvalue()


# Real files, and hostile ones to mutate further (tests/hostile.py)
REAL = {fmt: _real(fmt) for fmt in ("PNG", "GIF", "WEBP")} | {
    "frame bomb": frame_bomb_gif(), "huge webp": huge_webp(), "huge gif": huge_gif(20000, 20000),
    "corrupt gif": corrupt_gif()}


@pytest.mark.parametrize("examples", EXAMPLES)
def test_mutated_pictures_and_clips_are_read_or_refused(examples):
    @fuzz(examples, st.sampled_from(sorted(REAL)),
          st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8), st.integers(0, 10_000))
    def check(fmt, flips, cut):
        data = bytearray(REAL[fmt])
        for at, value in flips:  # bytes overwritten, then perhaps the file cut short
            data[at % len(data)] = value
        data = bytes(data[:max(1, len(data) - cut % len(data))])
        _refused_or_fine(lambda b: load_image(b, 32), data)
        _refused_or_fine(lambda b: load_clip(b, 32), data)
