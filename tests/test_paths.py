"""Files named by a dataset or a checkpoint never lead outside the folder the user named."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from smalto.checkpoint import load_checkpoint
from smalto.export import pack
from smalto.apps.cli import main
from smalto.data import load_folder
from smalto.errors import SmaltoError
from smalto.export import export_hf
from smalto.paths import inside
from smalto.pipeline import DEFAULT_MODEL
from smalto.tokenizers import FILES

from hostile import bomb_png

PNG = bomb_png(32, 32)


@pytest.fixture
def world(tmp_path):
    """A user's machine: a private picture beside the dataset they were handed."""
    (tmp_path / "private.png").write_bytes(PNG)
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "ok.png").write_bytes(PNG)
    return data


def write_index(data, image: str) -> None:
    lines = [{"image": "images/ok.png", "text": "fine"}, {"image": image, "text": "sneaky"}]
    (data / "data.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


@pytest.mark.parametrize("escape", ["../private.png", "images/../../private.png", "ABSOLUTE", "images/link.png",
                                    "linked/private.png"])
def test_a_dataset_cannot_make_smalto_read_outside_its_folder(world, escape, capsys):
    (world / "images" / "link.png").symlink_to(world.parent / "private.png")
    (world / "linked").symlink_to(world.parent)  # a symlinked directory
    image = str(world.parent / "private.png") if escape == "ABSOLUTE" else escape
    write_index(world, image)
    with pytest.raises(SmaltoError, match=r"data.jsonl:2: image .* (points outside|is an absolute path)"):
        load_folder(world)
    for command in (["data", "check", str(world)], ["tokenizer", "train", "--data", str(world), "--out",
                                                    str(world.parent / "tok"), "--steps", "1"]):
        assert main(command) == 2
        assert "data.jsonl:2: image" in capsys.readouterr().err
    assert not (world.parent / "tok").exists()


def test_the_refusal_does_not_tell_whether_the_outside_file_exists(world):
    messages = []
    for name in ("../private.png", "../no-such-file.png"):
        write_index(world, name)
        with pytest.raises(SmaltoError) as info:
            load_folder(world)
        messages.append(str(info.value).replace(name, "NAME"))
    assert messages[0] == messages[1] and "not found" not in messages[0]


def test_paths_that_stay_inside_are_fine(world):
    (world / "images" / "alias.png").symlink_to("ok.png")  # a symlink within the folder
    write_index(world, "images/../images/alias.png")
    assert len(load_folder(world)) == 2
    (world.parent / "elsewhere").symlink_to(world)  # the folder itself may be reached through a link
    assert len(load_folder(world.parent / "elsewhere")) == 2


def test_inside_refuses_loops_with_a_clear_error(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(SmaltoError, match="loop"):
        inside(tmp_path, "loop/x.png")


@pytest.fixture
def checkpoint(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(DEFAULT_MODEL, run)
    return run


@pytest.mark.parametrize("name", ["model.safetensors", "meta.json", "tokenizers", "tokenizers/text.json",
                                  "tokenizers/image.safetensors"])
def test_a_checkpoint_cannot_point_outside_itself(checkpoint, name):
    target = checkpoint.parent / f"outside-{name.replace('/', '-')}"
    shutil.move(checkpoint / name, target)
    os.symlink(target, checkpoint / name)
    with pytest.raises(SmaltoError, match="points outside"):
        load_checkpoint(checkpoint)


def test_resuming_never_reads_a_folder_only_the_checkpoint_names(checkpoint, capsys):
    meta = json.loads((checkpoint / "meta.json").read_text())
    meta["train"]["data"] = "/home/someone/photos"
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    assert main(["train", "--out", str(checkpoint), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "trained on the folder '/home/someone/photos'" in err and "--data /home/someone/photos" in err


def test_packing_or_exporting_a_checkpoint_carries_no_outside_file_on(checkpoint, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the user's private notes")
    (checkpoint / "tokenizers" / "notes.txt").symlink_to(secret)  # planted by whoever shared the run
    packed = pack(checkpoint, tmp_path / "packed")
    exported = export_hf(checkpoint, tmp_path / "hf")
    carried = [p for out in (packed, exported) for p in out.rglob("*") if p.is_file()]
    assert carried and not any("private notes" in p.read_bytes().decode(errors="ignore") for p in carried)
    assert sorted(p.name for p in (packed / "tokenizers").iterdir()) == sorted(FILES)  # the shipped model reads clips


@pytest.mark.parametrize("change, words", [
    ({"dim": 2**16}, "does not fit the config"),  # would allocate ~65 GB before finding out
    ({"n_layers": 10**9}, "n_layers must be at most"),
    ({"max_seq_len": 10**12}, "max_seq_len at most"),
    ({"vocab_size": -3}, "vocab_size must be a positive integer"),
])
def test_a_config_that_does_not_fit_its_weights_is_refused_before_allocating(checkpoint, change, words):
    meta = json.loads((checkpoint / "meta.json").read_text())
    meta["model"].update(change)
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    t = time.perf_counter()
    with pytest.raises(SmaltoError, match=words):
        load_checkpoint(checkpoint)
    assert time.perf_counter() - t < 2


def test_an_image_tokenizer_config_is_checked_against_its_weights(checkpoint):
    config = checkpoint / "tokenizers" / "image.json"
    raw = json.loads(config.read_text())
    config.write_text(json.dumps({**raw, "channels": [4096] * 3}))  # ~2 GB of convolutions if built
    with pytest.raises(SmaltoError, match="image.safetensors: does not fit the config in image.json"):
        load_checkpoint(checkpoint)
    config.write_text(json.dumps({**raw, "channels": [8] * 100}))
    with pytest.raises(SmaltoError, match="1 to 8 widths"):
        load_checkpoint(checkpoint)
