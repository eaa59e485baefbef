"""The `smalto` command, run for real: outputs on disk, exit codes, and one-line errors without tracebacks."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smalto import __version__
from smalto.apps.cli import build_parser, main
from smalto.data import ShapesConfig, ShapesWorld

# One torch thread: on a small shared machine the default thread pool can make training 40x slower.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TOKENIZER_FILES = ["image.json", "image.safetensors", "loss.png", "reconstructions.png", "text.json",
                   "train.json", "train_log.jsonl"]


def smalto(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smalto", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


def assert_user_error(r: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, no traceback, and the last stderr line is the only `smalto: error:` line."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("smalto: error:")]
    assert errors == [lines[-1]], r.stderr
    for word in words:
        assert word in errors[0]
    return errors[0]


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


GOOD = {"image": "images/ok.png", "text": "a small red circle at the center"}
# Each case: (the third line of data.jsonl, extra files under images/).
BAD = {
    "missing image file": ({"image": "images/nope.png", "text": "x"}, {}),
    "corrupt png": ({"image": "images/bad.png", "text": "x"}, {"bad.png": bytes(range(256)) * 2}),
    "truncated png": ({"image": "images/bad.png", "text": "x"},
                      {"bad.png": png_bytes(Image.effect_noise((64, 64), 100).convert("RGB"))[:2000]}),
    "jpeg that is not an image": ({"image": "images/bad.jpg", "text": "x"}, {"bad.jpg": b"not a jpeg"}),
    "malformed json": ('{"image": "images/ok.png", "text": ', {}),
    "json list": ('["images/ok.png", "a red circle"]', {}),
    "missing text": ({"image": "images/ok.png"}, {}),
    "missing image": ({"text": "a red circle"}, {}),
    "non-string text": ({"image": "images/ok.png", "text": ["a", "b"]}, {}),
    "bad qa": ({**GOOD, "qa": [{"question": "how many?", "a": "1"}]}, {}),
    "bad scene": ({**GOOD, "scene": {"objects": [{"shape": "circle"}]}}, {}),
}


def make_folder(root: Path, lines: list, files: dict[str, bytes] | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    for name, data in {"ok.png": png_bytes(Image.new("RGB", (32, 32), (9, 9, 9))), **(files or {})}.items():
        (root / "images" / name).write_bytes(data)
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    (root / "data.jsonl").write_text(text + "\n")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tokenizer trained for a few seconds; shared by the tests that only read it."""
    cwd = tmp_path_factory.mktemp("train")
    r = smalto("tokenizer", "train", "--out", "T", "--steps", 30, "--eval-images", 20, "--batch-size", 8, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert "PSNR" in r.stdout
    return cwd / "T"


def test_version(capsys):
    r = smalto("--version", cwd=Path.cwd())
    assert r.returncode == 0 and r.stdout.strip() == f"smalto {__version__}"
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and __version__ in capsys.readouterr().out


def test_data_shapes_writes_a_folder_that_checks(tmp_path):
    r = smalto("data", "shapes", "--out", "D", "--n", 20, "--seed", 3, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "D" / "images").glob("*.png"))) == 20
    rows = [json.loads(line) for line in (tmp_path / "D" / "data.jsonl").read_text().splitlines()]
    assert len(rows) == 20
    assert all({"image", "text", "qa", "scene"} <= row.keys() for row in rows)
    assert all((tmp_path / "D" / row["image"]).is_file() for row in rows)

    r = smalto("data", "check", "D", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "20 records" in r.stdout and "OK" in r.stdout


def test_data_shapes_is_deterministic(tmp_path):
    for out, seed in [("a", 3), ("b", 3), ("c", 4)]:
        assert smalto("data", "shapes", "--out", out, "--n", 20, "--seed", seed, cwd=tmp_path).returncode == 0
    index = {out: (tmp_path / out / "data.jsonl").read_bytes() for out in "abc"}
    assert index["a"] == index["b"]
    assert index["a"] != index["c"]


def test_data_shapes_refuses_existing_dir_without_force(tmp_path):
    (tmp_path / "D").mkdir()
    (tmp_path / "D" / "mine.txt").write_text("keep")
    assert_user_error(smalto("data", "shapes", "--out", "D", "--n", 2, cwd=tmp_path), "already exists", "--force")
    assert [p.name for p in (tmp_path / "D").iterdir()] == ["mine.txt"]
    assert smalto("data", "shapes", "--out", "D", "--n", 2, "--force", cwd=tmp_path).returncode == 0
    assert (tmp_path / "D" / "data.jsonl").is_file() and not (tmp_path / "D" / "mine.txt").exists()


@pytest.mark.parametrize("case", BAD)
def test_data_check_bad_input(tmp_path, case):
    line, files = BAD[case]
    make_folder(tmp_path / "BAD", [GOOD, GOOD, line], files)
    r = smalto("data", "check", "BAD", cwd=tmp_path)
    assert_user_error(r, "data.jsonl:3")
    assert "OK" not in r.stdout


@pytest.mark.parametrize("content, words", [
    ("", ["data.jsonl", "empty"]),
    ("\n \n\n", ["data.jsonl", "empty"]),
    (None, ["data.jsonl"]),  # no index at all
])
def test_data_check_empty_or_missing_index(tmp_path, content, words):
    (tmp_path / "BAD" / "images").mkdir(parents=True)
    if content is not None:
        (tmp_path / "BAD" / "data.jsonl").write_text(content)
    assert_user_error(smalto("data", "check", "BAD", cwd=tmp_path), *words)


def test_main_returns_2_on_user_error(tmp_path, capsys):
    make_folder(tmp_path / "BAD", [GOOD, "", BAD["missing text"][0]])
    assert main(["data", "check", str(tmp_path / "BAD")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("smalto: error:") and "data.jsonl:3" in err


@pytest.mark.parametrize("args", [
    ["data", "shapes", "--out", "OUT", "--n", "0"],
    ["data", "shapes", "--out", "OUT", "--n", "many"],
    ["data", "shapes", "--n", "5"],
    ["data", "shapes", "--out", "OUT", "--n", "5", "--max-objects", "9"],
    ["tokenizer", "train", "--out", "OUT", "--steps", "0"],
    ["tokenizer", "train", "--out", "OUT", "--quantizer", "pq"],
], ids=["n=0", "n=many", "no --out", "max-objects=9", "steps=0", "quantizer=pq"])
def test_bad_flags(tmp_path, args):
    r = smalto(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "error" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_tokenizer_train_writes_everything(trained):
    assert sorted(p.name for p in trained.iterdir()) == TOKENIZER_FILES
    assert [p.name for p in trained.parent.iterdir()] == ["T"]  # no temp directories left behind
    log = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 29
    summary = json.loads((trained / "train.json").read_text())
    assert summary["config"]["steps"] == 30 and summary["metrics"]["images"] == 20
    for png in ("loss.png", "reconstructions.png"):
        with Image.open(trained / png) as img:
            assert img.format == "PNG"


def test_tokenizer_eval_writes_json(trained, tmp_path):
    r = smalto("tokenizer", "eval", "--tokenizer", trained, "--n", 20, "--json", "M.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "M.json").read_text())
    assert {"psnr", "usage", "perplexity", "verifier_agreement"} <= metrics.keys()
    assert metrics["images"] == 20 and metrics["psnr"] > 0 and 0 < metrics["usage"] <= 100


def test_tokenizer_train_bad_data_creates_nothing(tmp_path):
    make_folder(tmp_path / "BAD", [GOOD, GOOD, BAD["malformed json"][0]])
    r = smalto("tokenizer", "train", "--data", "BAD", "--out", "T", "--steps", 2, cwd=tmp_path)
    assert_user_error(r, "data.jsonl:3", "JSON")
    assert not (tmp_path / "T").exists()


def test_tokenizer_train_lfq_needs_power_of_two(tmp_path):
    r = smalto("tokenizer", "train", "--out", "T", "--steps", 2, "--quantizer", "lfq", "--codebook-size", 500,
               cwd=tmp_path)
    assert_user_error(r, "power-of-two", "500")
    assert list(tmp_path.iterdir()) == []


def test_tokenizer_eval_missing_tokenizer(tmp_path):
    assert_user_error(smalto("tokenizer", "eval", "--tokenizer", "/nonexistent", "--n", 4, cwd=tmp_path),
                      "/nonexistent")
    assert list(tmp_path.iterdir()) == []


def test_tokenizer_eval_defaults_to_the_shipped_tokenizer(tmp_path):
    r = smalto("tokenizer", "eval", "--n", "100", "--json", "m.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["tokenizer"].endswith("assets/model/tokenizers")
    assert report["verifier_agreement"] >= 99 and report["psnr"] >= 28


def test_demo_writes_a_gallery(tmp_path):
    from smalto.apps.demo import PROMPTS

    r = smalto("demo", "--out", "demo", "--quick", cwd=tmp_path)  # (`make demo` runs it whole)
    assert r.returncode == 0, r.stderr
    assert "| caption exact |" in r.stdout and "| draw single object |" in r.stdout
    page = (tmp_path / "demo" / "index.html").read_text()
    assert page.count('class="card"') == len(PROMPTS) + 6 + 3 + 3 and "data:image/png;base64," in page
    assert "<h2>Conversations" in page and page.count("<li>") >= 6 * 3 + 3
    assert "<h2>Clips" in page and "data:image/gif;base64," in page  # the shipped model reads clips
    assert "| clip caption exact |" in r.stdout and "| POPE random F1 |" in r.stdout
    assert Image.open(tmp_path / "demo" / "gallery.png").size[1] > len(PROMPTS) * 4 * 32


def test_hostile_inputs_are_one_line_errors(tmp_path):
    """A picture too large to open (refused from its header, before Pillow's own bomb check trips
    in the clip probe) and a question whose bytes are not UTF-8: rc 2, one line, no traceback."""
    from hostile import bomb_png

    (tmp_path / "huge.png").write_bytes(bomb_png(20000, 20000))
    r = smalto("caption", "huge.png", cwd=tmp_path)
    assert r.returncode == 2 and "huge.png" in r.stderr and "Traceback" not in r.stderr
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "scene.png")
    r = subprocess.run([sys.executable, "-m", "smalto", "ask", "scene.png", b"what \xff color?"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not valid UTF-8" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model")
    from smalto.tokenizers import DEFAULT_TOKENIZERS

    r = smalto("train", "--out", "m", "--preset", "shapes-micro", "--steps", "4", "--batch-size", "4",
               "--save-every", "2", "--eval-every", "0", "--tokenizers", DEFAULT_TOKENIZERS, cwd=root)
    assert r.returncode == 0, r.stderr
    return root / "m"


def test_train_writes_a_resumable_checkpoint(model_dir, tmp_path):
    meta = json.loads((model_dir / "meta.json").read_text())
    assert meta["step"] == 4 and (model_dir / "optimizer.safetensors").exists()
    assert (model_dir / "tokenizers" / "image.safetensors").exists()
    r = smalto("train", "--out", str(model_dir), "--resume", "--steps", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # already at step 4 of 4: nothing to do, but no error


def test_generate_caption_ask_eval(model_dir, tmp_path):
    r = smalto("generate", "a small red circle at the top left", "--model", model_dir, "--n", "2",
               "--out", "grid.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "grid.png").size == (2 * 128 + 6, 128 + 4)
    assert r.stdout.startswith("image 1: the verifier reads '"), r.stdout  # what came out, not the prompt
    again = smalto("generate", "a small red circle at the top left", "--model", model_dir, "--out", "grid.png",
                   cwd=tmp_path)
    assert_user_error(again, "grid.png: already exists", "--force")  # refused before the model loads
    r = smalto("generate", "a cat", "--model", model_dir, "--out", "one.png", cwd=tmp_path)
    assert r.returncode == 0 and "'cat'" in r.stderr and "knows only circles, squares, triangles" in r.stderr
    assert Image.open(tmp_path / "one.png").size == (128, 128)  # --n 1 at the grid's scale
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "scene.png")
    for args in (("caption", "scene.png"), ("ask", "scene.png", "how many circles are there?")):
        r = smalto(*args, "--model", model_dir, cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.endswith("\n"), r.stderr
    r = smalto("eval", "--model", model_dir, "--quick", "--json", "e.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "e.json").read_text())
    # a run records its training stream, so its report has all three kinds of scene
    assert {"seen", "unseen", "heldout", "weights"} <= set(report) and report["scenes"]["verified"]
    assert {"single_object", "two_objects", "counting", "colors", "position", "attribute_binding"} <= set(
        report["unseen"]["draw"])
    assert len(report["weights"]) == 16 and "/" not in (tmp_path / "e.json").read_text().split('"scenes"')[0]
    assert "| caption exact |" in r.stdout and "| seen scenes | unseen scenes | heldout scenes | baseline |" in r.stdout


@pytest.mark.parametrize("args, words", [
    (("generate", "", "--model", "M"), ("prompt is empty",)),
    (("caption", "notes.txt", "--model", "M"), ("notes.txt",)),
    (("ask", "notes.txt", "what?", "--model", "M"), ("notes.txt",)),
    (("generate", "a red circle", "--model", "nowhere"), ("nowhere",)),
    (("train", "--out", "M", "--steps", "2"), ("already exists",)),
])
def test_model_commands_bad_input(model_dir, tmp_path, args, words):
    (tmp_path / "notes.txt").write_text("not an image")
    args = [str(model_dir) if a == "M" else a for a in args]
    assert_user_error(smalto(*args, cwd=tmp_path), *words)


@pytest.mark.parametrize("args, words", [
    (("train", "--out", "neg", "--seed", "-1", "--steps", "1"), ("seed",)),
    (("data", "shapes", "--out", "neg", "--n", "2", "--seed", "-1"), ("seed",)),
    (("generate", "a red circle", "--scale", "0"), ("--scale",)),
    (("generate", "a red circle", "--out", "."), ("is a directory",)),
    (("pack", "--model", "M", "--out", "."), ("not a checkpoint",)),
])
def test_more_bad_flags(model_dir, tmp_path, args, words):
    args = [str(model_dir) if a == "M" else a for a in args]
    assert_user_error(smalto(*args, cwd=tmp_path), *words)
    assert not (tmp_path / "neg").exists()


# --- flags made from the config dataclasses; --resume with other flags (issue 10) ---

def walk(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """(command words, action) for every argument of every command."""
    for action in parser._actions:
        yield words, action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*words, name))


def config_defaults(cls) -> dict:
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls)}


def test_every_option_and_command_has_a_help_line():
    silent = [f"{' '.join(words)} {action.option_strings or action.dest}" for words, action in walk(build_parser())
              if not (action.help or "").strip()]
    silent += [f"{' '.join(words)} {sub.dest}" for words, action in walk(build_parser())
               if isinstance(action, argparse._SubParsersAction) for sub in action._choices_actions
               if not (sub.help or "").strip()]
    assert not silent, silent


def test_flag_defaults_are_the_config_defaults_and_every_field_has_a_flag():
    from smalto.apps.serve.config import ServeConfig
    from smalto.tokenizers import ImageTokenizerConfig
    from smalto.training.tokenizer import TokenizerTrainConfig
    from smalto.data.tasks import TASKS
    from smalto.training.data import TaskMix
    from smalto.training.trainer import TrainConfig

    from smalto.training.finetune import FinetuneConfig
    from smalto.training.rl import RLConfig

    configs = {("data", "shapes"): [ShapesConfig], ("tokenizer", "train"): [TokenizerTrainConfig, ImageTokenizerConfig],
               ("train",): [TrainConfig, TaskMix], ("serve",): [ServeConfig], ("finetune",): [FinetuneConfig],
               ("rl",): [RLConfig]}
    mix = TaskMix()
    special = {"mix": tuple((t, getattr(mix, t)) for t in TASKS if getattr(mix, t)),
               "max_body_mb": ServeConfig.max_body_bytes / 2**20}
    dests: dict[tuple, set] = {}
    checked = 0
    for words, action in walk(build_parser()):
        dests.setdefault(words, set()).add(action.dest)
        expected = {k: v for cls in configs.get(words, []) for k, v in config_defaults(cls).items()}
        if action.dest in special and words in (("train",), ("serve",)):
            assert action.default == special[action.dest], action.dest
        elif action.dest in expected and action.dest not in ("model_name", "api_key"):  # the model's, $SMALTO_API_KEY
            default = tuple(action.default) if isinstance(action.default, list) else action.default  # --freeze
            assert default == expected[action.dest], (words, action.dest, default, expected[action.dest])
            checked += 1
    assert checked >= 30
    # Generated, not hand-picked: each config field is a flag (the task weights are --mix).
    # (an adapter is trained by `smalto finetune`, whose flags make it)
    assert {f.name for f in dataclasses.fields(TrainConfig)} - {"adapter"} <= dests[("train",)]
    assert {f.name for f in dataclasses.fields(FinetuneConfig)} <= dests[("finetune",)]
    assert {f.name for f in dataclasses.fields(RLConfig)} <= dests[("rl",)]
    assert {f.name for f in dataclasses.fields(TaskMix)} - set(TASKS) <= dests[("train",)]
    assert {f.name for f in dataclasses.fields(TokenizerTrainConfig)} - {"image"} <= dests[("tokenizer", "train")]
    assert {f.name for f in dataclasses.fields(ServeConfig)} - {"max_body_bytes"} <= dests[("serve",)]


def test_choices_are_listed_and_are_what_the_code_accepts(capsys):
    from smalto import precision
    from smalto.model import PRESETS
    from smalto.tokenizers import ImageTokenizerConfig
    from smalto.training.trainer import PRECISIONS, TrainConfig

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])  # the lazily added flags are there when help is asked for
    help_text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0 and "--init-from" in help_text and "--freeze PATTERN" in help_text
    assert "{" + ",".join(PRESETS) + "}" in help_text and "{" + ",".join(PRECISIONS) + "}" in help_text
    flags = {(words, action.dest): action for words, action in walk(build_parser())}
    assert flags[("train",), "preset"].choices == tuple(PRESETS)
    for value in flags[("train",), "precision"].choices:
        TrainConfig(precision=value)
    for value in flags[("tokenizer", "train"), "quantizer"].choices:
        ImageTokenizerConfig(quantizer=value)
    for words in [("generate",), ("caption",), ("serve",), ("bench",)]:
        assert set(flags[words, "dtype"].choices) == {"auto", *precision.DTYPES}
    assert flags[("data", "shapes"), "split"].choices == ShapesWorld.SPLITS
    assert ("export", "format") not in flags  # it was never read


def test_lazy_and_eager_parsers_agree_and_data_commands_do_not_import_torch():
    argv = ["train", "--out", "x", "--freeze", "embed.*", "--freeze", "norm.*", "--mix", "1", "0", "2", "0", "0",
            "--lr", "0.01", "--no-train-prompt-images"]
    lazy, eager = build_parser(lazy=True).parse_args(argv), build_parser().parse_args(argv)
    assert vars(lazy) == vars(eager) and lazy.freeze == ["embed.*", "norm.*"] and lazy.train_prompt_images is False
    code = ("import sys; from smalto.apps.cli import build_parser; "
            "build_parser(lazy=True).parse_args(['data', 'check', 'x']); assert 'torch' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("resume") / "run"
    args = ["train", "--out", str(out), "--preset", "shapes-micro", "--steps", "2", "--batch-size", "4",
            "--save-every", "2", "--eval-every", "0", "--lr", "0.004", "--freeze", "embed.*"]
    assert main(args) == 0
    return out, args


@pytest.mark.parametrize("flags, words", [
    (["--lr", "0.003"], ["--lr 0.003 contradicts", "trained with --lr 0.004"]),  # the default, but given
    (["--batch-size", "8"], ["--batch-size 8 contradicts", "--batch-size 4"]),
    (["--freeze", "embed.*", "--freeze", "norm.*"], ["--freeze embed.* norm.* contradicts", "--freeze embed.*;"]),
    (["--mix", "1", "1", "1", "0", "0"], ["--mix caption=1 draw=1 qa=1 contradicts",
                                          "--mix caption=0.3 draw=0.4 qa=0.3"]),
    (["--no-train-prompt-images"], ["--train-prompt-images False contradicts"]),
    (["--preset", "shapes-tiny"], ["--preset shapes-tiny contradicts", "--preset shapes-micro"]),
    (["--data", "shapes", "--seed", "3"], ["--seed 3 contradicts", "--seed 0"]),
    (["--init-from", "elsewhere"], ["--init-from elsewhere contradicts", "--init-from (none)"]),
], ids=["lr", "batch-size", "freeze", "mix", "train-prompt-images", "preset", "seed", "init-from"])
def test_resume_with_a_contradicting_flag_is_a_one_line_error_naming_it(small_run, capsys, flags, words):
    out, _ = small_run
    meta = (out / "meta.json").read_text()
    assert main(["train", "--out", str(out), "--resume", "--steps", "3", *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smalto: error: --"), lines
    assert all(word in lines[0] for word in words), lines[0]
    assert "only --steps, --pause-at and --compile may change" in lines[0]
    assert (out / "meta.json").read_text() == meta  # nothing ran


def test_resume_with_the_same_flags_or_only_steps_continues(small_run):
    out, args = small_run
    assert main([*args, "--resume", "--steps", "3"]) == 0  # every flag as before; --steps moves on
    assert json.loads((out / "meta.json").read_text())["step"] == 3
    assert main(["train", "--out", str(out), "--resume", "--steps", "4"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["step"] == 4 and meta["train"]["lr"] == 0.004 and meta["train"]["freeze"] == ["embed.*"]


def test_mix_takes_task_names_or_bare_weights_in_order(capsys):
    from smalto.apps.cli import _train_config
    from smalto.errors import SmaltoError

    def mix(*words):
        return _train_config(build_parser().parse_args(["train", "--out", "x", "--mix", *words])).mix

    named, bare = mix("qa=0.5", "clip_next=2"), mix("0", "0", "0.5", "0", "0", "0", "0", "0", "2")
    assert named == bare and (named.qa, named.clip_next, named.caption, named.draw) == (0.5, 2.0, 0.0, 0.0)
    with pytest.raises(SmaltoError, match="not both"):
        mix("qa=0.5", "1")
    with pytest.raises(SmaltoError, match="names a task twice: qa qa"):
        mix("qa=0.5", "qa=1")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "x", "--mix", "captions=1"])
    assert "no task 'captions'; the tasks are caption, draw, qa" in capsys.readouterr().err
