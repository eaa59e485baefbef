"""The bring-your-own folder loader: round trips, documented conversions, errors that name file and line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smalto.data import Record, ShapesWorld, load_folder, load_image, write_folder, write_shapes
from smalto.errors import SmaltoError


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


GOOD_PNG = png_bytes(Image.new("RGB", (32, 32), (10, 20, 30)))
GOOD = {"image": "images/ok.png", "text": "a small red circle at the center"}

# Each case: (the line written to data.jsonl, extra files under images/, a word the error must contain).
BAD = {
    "missing image file": ({"image": "images/nope.png", "text": "x"}, {}, "nope.png"),
    "corrupt png": ({"image": "images/bad.png", "text": "x"},
                    {"bad.png": np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes()}, "bad.png"),
    "truncated png": ({"image": "images/bad.png", "text": "x"},
                      {"bad.png": png_bytes(Image.fromarray(
                          np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)))[:3000]}, "bad.png"),
    "jpeg that is not an image": ({"image": "images/bad.jpg", "text": "x"}, {"bad.jpg": b"not a jpeg"}, "bad.jpg"),
    "malformed json": ('{"image": "images/ok.png", "text": ', {}, "JSON"),
    "json list": ('["images/ok.png", "a red circle"]', {}, "object"),
    "missing text": ({"image": "images/ok.png"}, {}, "'text'"),
    "missing image": ({"text": "a red circle"}, {}, "'image'"),
    "non-string text": ({"image": "images/ok.png", "text": 42}, {}, "'text'"),
    "qa not a list": ({**GOOD, "qa": {"q": "how many?", "a": "1"}}, {}, "'qa'"),
    "qa pair without answer": ({**GOOD, "qa": [{"q": "how many?"}]}, {}, "'qa'"),
    "scene without objects": ({**GOOD, "scene": {"things": []}}, {}, "'scene'"),
    "scene object missing fields": ({**GOOD, "scene": {"objects": [{"shape": "circle"}]}}, {}, "'scene'"),
}


def make_folder(root: Path, lines: list, files: dict[str, bytes] | None = None) -> Path:
    """A folder whose data.jsonl holds `lines` (dicts are JSON-encoded, strings written verbatim)."""
    (root / "images").mkdir(parents=True)
    for name, data in {"ok.png": GOOD_PNG, **(files or {})}.items():
        (root / "images" / name).write_bytes(data)
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    (root / "data.jsonl").write_text(text + "\n")
    return root


@pytest.fixture
def shapes_dir(tmp_path):
    return write_shapes(tmp_path / "shapes", n=6, seed=1)


def test_write_shapes_round_trips(shapes_dir):
    folder = load_folder(shapes_dir)
    world = ShapesWorld(seed=1)
    assert len(folder) == 6
    assert folder.images.dtype == np.uint8 and folder.images.shape == (6, 32, 32, 3)
    for i, record in enumerate(folder.records):
        s = world[i]
        np.testing.assert_array_equal(folder.images[i], s.image)
        assert record.text == s.captions[0]
        assert record.qa == s.qa and record.qa
        assert record.scene == s.scene


def test_texts_yields_captions_questions_and_answers(shapes_dir):
    folder = load_folder(shapes_dir)
    r = folder.records[0]
    texts = list(folder.texts())
    assert texts[:3] == [r.text, r.qa[0]["q"], r.qa[0]["a"]]
    assert len(texts) == sum(1 + 2 * len(r.qa) for r in folder.records)


def half_transparent() -> Image.Image:
    img = Image.new("RGBA", (32, 32), (200, 0, 0, 255))
    img.paste((0, 0, 0, 0), (0, 0, 16, 32))  # left half fully transparent black
    return img


def palette() -> Image.Image:
    return Image.new("RGB", (32, 32), (0, 128, 255)).convert("P", palette=Image.Palette.ADAPTIVE)


def off_square() -> Image.Image:
    img = Image.new("RGB", (50, 40), (0, 200, 0))  # green margins are cropped away...
    img.paste((0, 0, 255), (5, 0, 45, 40))  # ...leaving the blue 40x40 centre
    return img


@pytest.mark.parametrize("make, left, right", [
    (lambda: Image.new("L", (32, 32), 100), (100, 100, 100), (100, 100, 100)),
    (half_transparent, (255, 255, 255), (200, 0, 0)),
    (palette, (0, 128, 255), (0, 128, 255)),
    (off_square, (0, 0, 255), (0, 0, 255)),
], ids=["grayscale", "rgba", "palette", "50x40"])
def test_conversions(tmp_path, make, left, right):
    path = tmp_path / "img.png"
    make().save(path)
    arr = load_image(path, 32)
    assert arr.dtype == np.uint8 and arr.shape == (32, 32, 3)
    assert tuple(arr[16, 2]) == left
    assert tuple(arr[16, 29]) == right
    # The same file through a folder gives the same pixels.
    root = make_folder(tmp_path / "f", [{"image": "images/x.png", "text": "x"}], {"x.png": path.read_bytes()})
    np.testing.assert_array_equal(load_folder(root).images[0], arr)


def test_large_image_is_resized(tmp_path):
    Image.new("RGB", (96, 96), (7, 8, 9)).save(tmp_path / "big.png")
    arr = load_image(tmp_path / "big.png", 32)
    assert arr.shape == (32, 32, 3) and (arr == (7, 8, 9)).all()


@pytest.mark.parametrize("case", BAD)
def test_bad_input_names_file_and_line(tmp_path, case):
    line, files, word = BAD[case]
    root = make_folder(tmp_path / "bad", [GOOD, GOOD, line], files)
    with pytest.raises(SmaltoError, match=r"data\.jsonl:3\b") as err:
        load_folder(root)
    assert word in str(err.value)


def test_blank_lines_are_skipped_but_counted(tmp_path):
    root = make_folder(tmp_path / "f", [GOOD, "", "   ", GOOD, {"image": "images/ok.png"}])
    with pytest.raises(SmaltoError, match=r"data\.jsonl:5: missing field 'text'"):
        load_folder(root)
    root = make_folder(tmp_path / "g", [GOOD, "", GOOD, ""])
    assert len(load_folder(root)) == 2


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "blank lines"])
def test_empty_index(tmp_path, content):
    root = make_folder(tmp_path / "f", [])
    (root / "data.jsonl").write_text(content)
    with pytest.raises(SmaltoError, match=r"data\.jsonl.*empty"):
        load_folder(root)


def test_directory_without_index(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(SmaltoError, match=r"no data\.jsonl"):
        load_folder(tmp_path)
    with pytest.raises(SmaltoError, match="not a directory"):
        load_folder(tmp_path / "missing")


def failing_items(n_ok: int):
    for i in range(n_ok):
        yield np.zeros((32, 32, 3), np.uint8), Record(f"images/{i}.png", "x")
    raise RuntimeError("boom")


def test_write_folder_is_atomic(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        write_folder(tmp_path / "out", failing_items(3))
    assert list(tmp_path.iterdir()) == []


def test_failed_force_write_leaves_existing_untouched(shapes_dir):
    before = (shapes_dir / "data.jsonl").read_bytes()
    with pytest.raises(RuntimeError):
        write_folder(shapes_dir, failing_items(2), force=True)
    assert (shapes_dir / "data.jsonl").read_bytes() == before
    assert sorted(p.name for p in shapes_dir.parent.iterdir()) == ["shapes"]


def test_existing_directory_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(SmaltoError, match="already exists"):
        write_shapes(out, n=2)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]

    write_shapes(out, n=2, force=True)
    assert not (out / "mine.txt").exists()
    assert len(load_folder(out)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp or .old directory left behind


@pytest.mark.parametrize("line, words", [
    ('{"clip": "a.gif", "text": "x", "qa": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ('{"clip": "a.gif", "text": "x", "scene": {"objects": [{"shape": "circle", "color": "red", "size": "small", '
     '"row": ' + "9" * 5000 + ', "col": 0}]}}', "not valid JSON"),
    ('{"clip": "a.gif", "text": "x", "scene": {"objects": [{"shape": "circle", "color": "red", "size": "small", '
     '"row": Infinity, "col": 0}]}}', "Infinity is not a number"),
    ('{"clip": "a.gif", "text": "x", "scene": {"objects": [{"shape": "circle", "color": "red", "size": "small", '
     '"row": 1e300, "col": 0}]}}', "not a scene graph"),
    ('{"clip": "a.gif", "text": "x", "motion": {"frames": 1e300, "objects": []}}', "not a clip"),
    ('{"clip": "a.gif", "text": "x", "motion": {"frames": -5, "objects": []}}', "not a clip"),
])
def test_hostile_lines_are_errors_naming_the_line(line, words):
    from smalto.data.folder import _parse_clip_line

    with pytest.raises(SmaltoError, match=words) as e:
        _parse_clip_line(line, "data.jsonl:3")
    assert str(e.value).startswith("data.jsonl:3: ")


def test_a_nul_byte_in_a_path_is_refused_by_name(tmp_path):
    from smalto.paths import inside

    with pytest.raises(SmaltoError, match="NUL byte"):
        inside(tmp_path, "a\0.png", "image")


@pytest.mark.parametrize("line", ['{"image": "a.png", "qa": ' + "[" * 100_000 + "]" * 100_000 + "}",
                                  '{"image": "a.png", "n": ' + "9" * 5000 + "}", '{"image": "a.png", "n": NaN}'])
def test_data_check_names_a_hostile_first_line(tmp_path, line, capsys):
    """The first line is read twice: to tell a clip folder from a picture folder, then as a record."""
    from smalto.apps.cli import main

    (tmp_path / "data.jsonl").write_text(line + "\n")
    assert main(["data", "check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"smalto: error: {tmp_path}/data.jsonl:1: ") and err.count("\n") == 1, err[:300]
