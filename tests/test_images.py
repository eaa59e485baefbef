"""Images are size-checked before decoding: a decompression bomb costs milliseconds and no memory."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from smalto.apps.cli import main
from smalto.data import MAX_PIXELS, load_folder, load_image
from smalto.data.gate import ImageTooLarge
from smalto.errors import SmaltoError

from hostile import bomb_png, frame_bomb_gif, gif

# Peak resident memory of a fresh interpreter while it refuses the bomb (from a file, then from
# bytes), over what it had before: Linux resets the peak (VmHWM) on writing 5 to clear_refs.
MEASURE = r"""
import json, sys, time
from smalto.data.images import load_image
from smalto.errors import SmaltoError

def status_kb(field):
    return int(next(l for l in open("/proc/self/status") if l.startswith(field)).split()[1])

raw = open(sys.argv[1], "rb").read()
open("/proc/self/clear_refs", "w").write("5")
before, t = status_kb("VmRSS"), time.perf_counter()
refused = 0
for source in (sys.argv[1], raw):
    try:
        load_image(source, 32)
    except SmaltoError:
        refused += 1
seconds = time.perf_counter() - t
print(json.dumps({"refused": refused, "seconds": seconds, "extra_mb": (status_kb("VmHWM") - before) / 1024}))
"""


def test_a_12000_square_png_is_refused_in_milliseconds_without_decoding_it(tmp_path, bomb):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    assert len(bomb) < 100_000
    r = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    measured = json.loads(r.stdout)
    # Decoding would take 144 MB as 1-bit grey and 432 MB as RGB; the refusal stays under 16 MB.
    assert measured["refused"] == 2 and measured["seconds"] < 0.1 and measured["extra_mb"] < 16, measured
    with pytest.raises(ImageTooLarge, match="12000×12000 = 144,000,000 pixels, over the limit of 16,777,216"):
        load_image(path, 32)


def test_the_largest_image_accepted_takes_a_bounded_amount_of_memory(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(bomb_png(4096, 4096, rgba=True))  # at the limit, and the costliest mode
    r = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=120)
    measured = json.loads(r.stdout)
    # The decoded RGBA (67 MB), the white RGB it is pasted on (50 MB) and its alpha channel (17 MB).
    assert measured["refused"] == 0 and measured["extra_mb"] < 200, measured


def test_the_limit_is_configurable_and_exact():
    raw = bomb_png(64, 64)
    assert load_image(raw, 32, max_pixels=64 * 64).shape == (32, 32, 3)
    with pytest.raises(ImageTooLarge):
        load_image(raw, 32, max_pixels=64 * 64 - 1)
    assert MAX_PIXELS == 4096 * 4096


def test_a_jpeg_is_decoded_at_reduced_scale_and_still_converted_right(tmp_path):
    img = Image.new("RGB", (2048, 1024), (200, 30, 40))
    img.paste((10, 20, 200), (512, 0, 1536, 512))
    path = tmp_path / "photo.jpg"
    img.save(path, quality=95)
    arr = load_image(path, 32)  # centre square [512, 1536) x [0, 1024): blue top half, red bottom half
    assert arr.shape == (32, 32, 3)
    assert np.abs(arr[4, 16].astype(int) - (10, 20, 200)).max() < 12
    assert np.abs(arr[28, 16].astype(int) - (200, 30, 40)).max() < 12


def test_a_bomb_in_a_folder_is_an_error_naming_the_line(tmp_path, bomb):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "ok.png").write_bytes(bomb_png(32, 32))
    (tmp_path / "images" / "bomb.png").write_bytes(bomb)
    lines = [{"image": "images/ok.png", "text": "fine"}, {"image": "images/bomb.png", "text": "boom"}]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(SmaltoError, match=r"data.jsonl:2: images/bomb.png: the image is 12000×12000"):
        load_folder(tmp_path)


def test_the_pipeline_refuses_a_bomb_as_a_path_or_as_a_lazily_opened_pil_image(shipped, tmp_path, bomb):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    t = time.perf_counter()
    for image in (path, str(path), Image.open(io.BytesIO(bomb))):
        with pytest.raises(ImageTooLarge):
            shipped.caption(image)
    assert time.perf_counter() - t < 0.5


def test_the_cli_refuses_a_bomb_and_honours_the_flag(tmp_path, bomb, capsys):
    (tmp_path / "bomb.png").write_bytes(bomb)
    (tmp_path / "small.png").write_bytes(bomb_png(40, 40))
    assert main(["caption", str(tmp_path / "bomb.png")]) == 2
    assert "over the limit of 16,777,216" in capsys.readouterr().err
    assert main(["ask", str(tmp_path / "small.png"), "how many circles?", "--max-image-pixels", "1599"]) == 2
    assert "40×40 = 1,600 pixels, over the limit of 1,599" in capsys.readouterr().err
    assert main(["caption", str(tmp_path / "small.png"), "--max-image-pixels", "1600"]) == 0


def test_a_clip_frame_that_declares_itself_huge_is_refused_before_it_is_composited():
    from smalto.data.video import load_clip

    start = time.perf_counter()
    with pytest.raises(ImageTooLarge, match="frame 1: the image is 12000×12000"):
        load_clip(frame_bomb_gif(), 32)
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize("fps", [b"1e308", b"inf", b"nan", b"-4"])
def test_a_clip_whose_frame_time_tag_is_absurd_reads_by_its_durations(fps):
    from smalto.data.video import load_clip

    clip = load_clip(bytes(gif(3, b"smalto fps=" + fps + b" frames=3", duration=65000)), 32)
    assert clip.shape == (3, 32, 32, 3)  # the tag ignored: each stored frame is one frame


def test_a_clip_over_its_pixel_budget_is_refused_before_a_frame_is_decoded(tmp_path, monkeypatch):
    """Each frame within the per-picture limit, but all of them together over the budget (four
    pictures at that limit): refused from the headers, as a file, as bytes and as a frame folder."""
    import smalto.data.video as video
    from smalto.data.gate import OverBudget

    clip = bytes(gif(8))  # 8 frames of 32×32 = 8,192 pixels in all
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(8):
        Image.fromarray(np.full((32, 32, 3), 30 * k, np.uint8)).save(folder / f"{k:02d}.png")
    (tmp_path / "clip.gif").write_bytes(clip)
    decoded = []
    monkeypatch.setattr(video, "convert_image", lambda *a: decoded.append(1))
    monkeypatch.setattr(video, "load_image", lambda *a, **kw: decoded.append(1))
    for source in (clip, tmp_path / "clip.gif", folder):
        with pytest.raises(OverBudget, match="bring this request to 8,192 pixels, over the budget of 4,096"):
            video.load_clip(source, 32, max_pixels=1024)
    assert decoded == []
    monkeypatch.undo()
    assert video.load_clip(clip, 32, max_pixels=2048).shape == (8, 32, 32, 3)  # 4 × 2,048: just fits
    assert video.load_clip(folder, 32, max_pixels=2048).shape == (8, 32, 32, 3)


@pytest.mark.parametrize("name", ["gif 20000²", "webp 16383²", "corrupt gif", "64 frames on a 4096² screen"])
def test_hostile_pictures_are_refused_by_both_readers_in_milliseconds(name):
    from hostile import corrupt_gif, huge_gif, huge_webp, wide_screen_gif

    from smalto.data.video import load_clip

    data = {"gif 20000²": lambda: huge_gif(20000, 20000), "webp 16383²": huge_webp, "corrupt gif": corrupt_gif,
            "64 frames on a 4096² screen": wide_screen_gif}[name]()
    readers = [load_clip] if name.startswith("64") else [load_image, load_clip]  # (its first frame is a picture)
    for read in readers:
        start = time.perf_counter()
        with pytest.raises(SmaltoError, match="^(image|clip): "):
            read(data, 32)
        assert time.perf_counter() - start < 0.2, read
