import json

import numpy as np
import pytest
import torch

from smalto.checkpoint import load_checkpoint, save_checkpoint
from smalto.errors import SmaltoError
from smalto.stream import TASKS, ExampleStream, TaskMix
from smalto.train import TrainConfig, train


def micro(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(preset="shapes-micro", steps=6, batch_size=8, warmup=2, log_every=1,
                                 eval_every=0, save_every=3), **kw})


def losses(log):
    return [r["loss"] for r in log if "loss" in r]


def test_stream_is_a_pure_function_of_position():
    from smalto.sequence import Vocab
    from smalto.tokenizers import load_tokenizers

    tok = load_tokenizers()
    vocab = Vocab.from_tokenizers(tok)
    a, b = ExampleStream(tok, vocab, seed=1), ExampleStream(tok, vocab, seed=1)
    assert [e.ids for _, e in a.examples(40, 5)] == [e.ids for _, e in b.examples(40, 5)]
    tasks = [t for t, _ in a.examples(0, 200)]
    assert {TASKS[t] for t in tasks} == set(TASKS)
    unconditional = [e for t, e in a.examples(0, 400) if TASKS[t] == "draw" and e.ids[2] == vocab.assistant]
    assert 5 <= len(unconditional) <= 40, "about 10% of drawings drop their prompt"


def test_resume_matches_an_uninterrupted_run(tmp_path):
    whole = train(tmp_path / "whole", micro(), progress=False)
    train(tmp_path / "split", micro(), progress=False, pause_at=3)
    assert json.loads((tmp_path / "split" / "meta.json").read_text())["step"] == 3
    resumed = train(tmp_path / "split", micro(), resume=True, progress=False)
    assert len(losses(whole)) == 6
    np.testing.assert_allclose(losses(resumed), losses(whole), rtol=1e-5)
    a, *_ = load_checkpoint(tmp_path / "whole")
    b, *_ = load_checkpoint(tmp_path / "split")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6, msg=name)


def test_resume_refuses_a_different_config(tmp_path):
    train(tmp_path / "run", micro(steps=2, save_every=2), progress=False)
    with pytest.raises(SmaltoError, match="different config"):
        train(tmp_path / "run", micro(steps=4, lr=1e-2), resume=True, progress=False)
    with pytest.raises(SmaltoError, match="already exists"):
        train(tmp_path / "run", micro(), progress=False)


@pytest.mark.parametrize("precision", ["auto", "fp32"])  # auto: bf16 autocast where the CPU has bf16
def test_seconds_of_training_lower_caption_and_draw_loss(tmp_path, precision):
    cfg = micro(steps=80, batch_size=16, lr=3e-3, warmup=5, save_every=80, log_every=5, precision=precision)
    log = [r for r in train(tmp_path / "run", cfg, progress=False) if "loss" in r]
    for task in ("caption", "draw"):
        first = np.mean([r[task] for r in log[:2] if task in r])
        last = np.mean([r[task] for r in log[-3:] if task in r])
        assert last < 0.6 * first, (task, first, last)
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    train(tmp_path / "run", micro(steps=2, save_every=2), progress=False)
    model, vocab, tok, meta = load_checkpoint(tmp_path / "run")
    assert meta["step"] == 2 and meta["data_position"] == 16
    ids = torch.randint(0, vocab.size, (2, 30))
    save_checkpoint(tmp_path / "copy", model, vocab, tok, dtype=None)
    again, *_ = load_checkpoint(tmp_path / "copy")
    torch.testing.assert_close(again(ids), model(ids))
    save_checkpoint(tmp_path / "half", model, vocab, tok, dtype=torch.bfloat16)
    half, *_ = load_checkpoint(tmp_path / "half")
    size = {name: (tmp_path / name / "model.safetensors").stat().st_size for name in ("half", "copy")}
    assert size["half"] < 0.6 * size["copy"]
    torch.testing.assert_close(half(ids), model(ids), atol=0.1, rtol=0.05)


def test_unreadable_or_incompatible_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(SmaltoError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SmaltoError, match="no meta.json"):
        load_checkpoint(tmp_path / "empty")
    train(tmp_path / "run", micro(steps=1, save_every=1), progress=False)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    meta["model"]["dim"] = 128  # weights no longer fit
    (tmp_path / "run" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SmaltoError, match="does not fit"):
        load_checkpoint(tmp_path / "run")
    meta["model"]["flux_capacitor"] = 1
    (tmp_path / "run" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SmaltoError, match="does not fit this version"):
        load_checkpoint(tmp_path / "run")


def test_bad_train_config_is_a_clear_error():
    with pytest.raises(SmaltoError, match="preset"):
        TrainConfig(preset="gigantic")
    with pytest.raises(SmaltoError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(SmaltoError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(SmaltoError, match="mix"):
        TaskMix(0, 0, 0).weights()


def test_a_run_killed_at_a_random_moment_resumes_to_the_same_model(tmp_path):
    """SIGKILL (the OOM killer) at a random instant, saves included; --resume then ends bit for bit
    where an uninterrupted run ends."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    flags = ["--preset", "shapes-micro", "--steps", "14", "--batch-size", "8", "--save-every", "1",
             "--eval-every", "0"]

    def smalto(*args, **kw):
        return subprocess.Popen([sys.executable, "-m", "smalto", "train", *args, *flags], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)

    assert smalto("--out", "whole").wait(300) == 0
    proc = smalto("--out", "killed")
    deadline = time.monotonic() + 120
    while not (tmp_path / "killed" / "meta.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random().uniform(0, 0.5))  # somewhere in the next few steps and saves
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    step = json.loads((tmp_path / "killed" / "meta.json").read_text())["step"]
    resumed = smalto("--out", "killed", "--resume")
    assert resumed.wait(300) == 0, resumed.stderr.read()
    whole, killed = (load_file(tmp_path / run / "model.safetensors") for run in ("whole", "killed"))
    assert 1 <= step < 14 and whole.keys() == killed.keys()
    assert all(torch.equal(whole[k], killed[k]) for k in whole), f"killed after step {step}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed", "whole"]  # no temporary left behind
