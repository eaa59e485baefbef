import json

import numpy as np
import pytest
import torch

from smalto.checkpoint import load_checkpoint, save_checkpoint
from smalto.errors import SmaltoError
from smalto.data.tasks import TASKS
from smalto.training.data import ExampleStream, TaskMix, data_position
from smalto.training.trainer import TrainConfig, train


def micro(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(preset="shapes-micro", steps=6, batch_size=8, warmup=2, log_every=1,
                                 eval_every=0, save_every=3), **kw})


def losses(log):
    return [r["loss"] for r in log if "loss" in r]


def test_stream_is_a_pure_function_of_position():
    from smalto.format import Vocab
    from smalto.tokenizers import load_tokenizers

    tok = load_tokenizers()
    vocab = Vocab.from_tokenizers(tok)
    mix = TaskMix(think=0.2, chat=0.2)
    a, b = ExampleStream(tok, vocab, mix=mix, seed=1), ExampleStream(tok, vocab, mix=mix, seed=1)
    assert [e.ids for _, e in a.examples(40, 5)] == [e.ids for _, e in b.examples(40, 5)]
    tasks = [t for t, _ in a.examples(0, 200)]
    assert {TASKS[t] for t in tasks} == {t for t in TASKS if getattr(mix, t)}  # clips: tests/test_video_pipeline.py
    assert {"think", "chat"}.isdisjoint(TASKS[t] for t, _ in ExampleStream(tok, vocab, seed=1).examples(0, 200))
    unconditional = [e for t, e in a.examples(0, 400) if TASKS[t] == "draw" and e.ids[2] == vocab.assistant]
    assert 5 <= len(unconditional) <= 40, "about 10% of drawings drop their prompt"


def test_thinking_traces_are_correct_by_construction():
    """The trace's description is the scene, and the question's answer computed from it is the
    trained answer; false premises are trained as "there is no ..."."""
    from smalto.data.shapes import parse_caption
    from smalto.format import Vocab
    from smalto.tokenizers import load_tokenizers
    from smalto.verify.spec import parse_question

    tok = load_tokenizers()
    vocab = Vocab.from_tokenizers(tok)
    stream = ExampleStream(tok, vocab, mix=TaskMix(caption=0, draw=0, qa=0, think=1, premises=0.5), seed=3)
    answers = []
    for task, e in stream.examples(0, 120):
        assert TASKS[task] == "think"
        ids = e.ids
        start, end = ids.index(vocab.think), ids.index(vocab.end_think)
        question = tok.text.decode(ids[ids.index(vocab.eoi) + 1:start - 1])
        trace, answer = tok.text.decode(ids[start + 1:end]), tok.text.decode(ids[end + 1:-1])
        assert parse_question(question).answer(parse_caption(trace.split(";")[0])) == answer, (question, trace)
        assert all(e.loss_mask[start:]) and not any(e.loss_mask[ids.index(vocab.eoi) + 1:start])
        answers.append(answer)
    assert sum(a.startswith("there is no") for a in answers) >= 15


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


# --- fine-tuning, freezing, auxiliary losses, data position (issue 10) ---

def base_run(tmp_path_factory, steps: int = 6):
    out = tmp_path_factory.mktemp("base") / "run"
    train(out, micro(steps=steps, save_every=steps, precision="fp32"), progress=False)
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return base_run(tmp_path_factory)


def checkpoint_loss(path, cfg: TrainConfig) -> float:
    """The checkpoint's own loss on the batch a run with `cfg` reads first."""
    from smalto.training.trainer import task_losses

    model, vocab, tok, _ = load_checkpoint(path)
    stream = ExampleStream(tok, vocab, cfg.data, cfg.mix, cfg.seed, max_len=model.cfg.max_seq_len)
    batch = stream.batch(0, cfg.batch_size, model.cfg.max_seq_len)
    with torch.no_grad():
        logits = model(batch.ids, batch.positions).logits
        return float(task_losses(logits, batch.targets, batch.mask, batch.tasks)[0])


def test_fine_tuning_starts_from_the_checkpoint_and_lowers_its_loss(base, tmp_path):
    cfg = micro(init_from=str(base), preset=None, steps=12, lr=3e-3, save_every=12, precision="fp32")
    assert cfg.preset is None  # the checkpoint's model, not the default preset
    log = train(tmp_path / "ft", cfg, progress=False)
    first, *_, last = losses(log)
    assert first == pytest.approx(checkpoint_loss(base, cfg), rel=1e-5)
    fresh = losses(train(tmp_path / "fresh", micro(steps=1, save_every=1, precision="fp32"), progress=False))[0]
    assert first < fresh - 0.3, "the first step already has the checkpoint's (lower) loss"
    assert np.mean(losses(log)[-3:]) < first - 0.3
    meta = json.loads((tmp_path / "ft" / "meta.json").read_text())
    assert meta["step"] == 12 and meta["train"]["init_from"] == str(base)  # step counts from 0 again
    assert meta["model"] == json.loads((base / "meta.json").read_text())["model"]


def test_fine_tuning_refuses_a_preset_or_tokenizers_that_contradict_the_checkpoint(base, tmp_path):
    import shutil

    from smalto.tokenizers import DEFAULT_TOKENIZERS

    with pytest.raises(SmaltoError, match="preset 'shapes-tiny' contradicts init_from"):
        train(tmp_path / "a", micro(init_from=str(base), preset="shapes-tiny"), progress=False)
    other = shutil.copytree(DEFAULT_TOKENIZERS, tmp_path / "tok")
    text = json.loads((other / "text.json").read_text())
    (other / "text.json").write_text(json.dumps(text, indent=1))  # same vocabulary, other bytes
    with pytest.raises(SmaltoError, match="are not the ones init_from"):
        train(tmp_path / "b", micro(init_from=str(base), tokenizers=str(other)), progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # Naming what the checkpoint has is fine.
    train(tmp_path / "c", micro(init_from=str(base), preset="shapes-micro", tokenizers=str(DEFAULT_TOKENIZERS),
                                steps=1, save_every=1), progress=False)


def test_frozen_parameters_stay_bit_identical_through_a_pause_and_resume(base, tmp_path):
    cfg = micro(init_from=str(base), freeze=("layers.0.*", "embed.*"), steps=4, save_every=2)
    train(tmp_path / "ft", cfg, progress=False, pause_at=2)
    log = train(tmp_path / "ft", cfg, resume=True, progress=False)
    before, *_ = load_checkpoint(base)
    after, *_ = load_checkpoint(tmp_path / "ft")
    frozen = {name for name, _ in before.named_parameters() if name.startswith(("layers.0.", "embed."))}
    assert frozen and "lm_head.weight" not in dict(before.named_parameters())  # tied: the head is the embedding
    old, new = before.state_dict(), after.state_dict()
    for name, _ in before.named_parameters():
        assert torch.equal(old[name], new[name]) == (name in frozen), name
    total = sum(p.numel() for p in before.parameters())
    trainable = total - sum(p.numel() for name, p in before.named_parameters() if name in frozen)
    assert [r for r in log if "trainable" in r][-1] == {"step": 2, "params": total, "trainable": trainable}


def test_resuming_with_another_config_names_the_field(base):
    with pytest.raises(SmaltoError, match=r"different config \(lr 0.003, not 0.01\)"):
        train(base, micro(steps=8, save_every=6, precision="fp32", lr=0.01), resume=True, progress=False)
    with pytest.raises(SmaltoError, match=r"different config \(freeze \(\), not \('norm.\*',\)\)"):
        train(base, micro(steps=8, save_every=6, precision="fp32", freeze=("norm.*",)), resume=True, progress=False)


def test_a_freeze_pattern_that_matches_nothing_is_an_error(tmp_path):
    with pytest.raises(SmaltoError, match=r"freeze: 'layer.0.\*' matches no parameter name \(names look like "
                                          r"embed.weight"):
        train(tmp_path / "run", micro(freeze=("layers.1.*", "layer.0.*")), progress=False)
    with pytest.raises(SmaltoError, match="nothing is left to train"):
        train(tmp_path / "run", micro(freeze=("*",)), progress=False)
    assert not (tmp_path / "run").exists()


def test_an_auxiliary_loss_changes_the_weights_and_is_logged(tmp_path, monkeypatch):
    def l2(model, batch, output):
        assert batch.ids.shape == output.logits.shape[:2]
        return {"l2": 0.5 * sum(p.pow(2).sum() for p in model.parameters())}

    cfg = micro(steps=2, save_every=2, precision="fp32")
    plain = train(tmp_path / "plain", cfg, progress=False)
    extra = train(tmp_path / "extra", cfg, progress=False, losses=[l2])
    assert losses(plain)[0] == losses(extra)[0]  # same start; "loss" stays the next-token loss
    assert [r["l2"] for r in extra if "loss" in r][0] > 0 and all("l2" not in r for r in plain)
    a, *_ = load_checkpoint(tmp_path / "plain")
    b, *_ = load_checkpoint(tmp_path / "extra")
    assert b.layers[0].mlp.down_proj.weight.norm() < a.layers[0].mlp.down_proj.weight.norm()  # pulled to 0
    with pytest.raises(SmaltoError, match="auxiliary loss 'loss'"):
        train(tmp_path / "clash", cfg, progress=False, losses=[lambda m, b, o: {"loss": o.logits.mean()}])


def test_the_models_own_auxiliary_loss_is_added_and_logged_when_not_zero(tmp_path, monkeypatch):
    from smalto.model import Transformer

    forward = Transformer.forward

    def with_aux(self, *args, **kw):
        out = forward(self, *args, **kw)
        return out._replace(aux_loss=out.aux_loss + 0.25 * self.norm.weight.mean())  # as a router's balance loss

    cfg = micro(steps=2, save_every=2, precision="fp32")
    plain = train(tmp_path / "plain", cfg, progress=False)
    assert all("aux_loss" not in r for r in plain)  # zero for dense layers: not logged
    monkeypatch.setattr(Transformer, "forward", with_aux)
    log = train(tmp_path / "aux", cfg, progress=False)
    assert [r["aux_loss"] for r in log if "loss" in r][0] == pytest.approx(0.25)
    a, *_ = load_checkpoint(tmp_path / "plain")
    b, *_ = load_checkpoint(tmp_path / "aux")
    assert b.norm.weight.mean() < a.norm.weight.mean()


@pytest.mark.parametrize("world_size, grad_accum", [(1, 1), (2, 1), (3, 2), (4, 3)])
def test_ranks_read_disjoint_data_that_together_is_one_process_reading_the_whole_batch(world_size, grad_accum):
    batch = 12  # the global batch
    for step in range(3):
        for micro_ in range(grad_accum):
            one = data_position(step, micro_, 0, 1, batch, grad_accum)
            share = batch // world_size
            slices = [set(range(p, p + share)) for p in
                      (data_position(step, micro_, r, world_size, batch, grad_accum) for r in range(world_size))]
            assert sum(map(len, slices)) == len(set().union(*slices))  # disjoint
            assert set().union(*slices) == set(range(one, one + batch))
    # One process reads what it always has: micro-batches one after the other.
    assert [data_position(s, m, 0, 1, batch, grad_accum) for s in range(2) for m in range(grad_accum)] == \
           [i * batch for i in range(2 * grad_accum)]


def test_several_processes_need_torchrun_and_a_batch_they_can_share(tmp_path):
    from smalto.training.dist import Processes

    with pytest.raises(SmaltoError, match="torchrun"):
        train(tmp_path / "x", micro(batch_size=4), progress=False, processes=Processes(0, 2, 0, "gloo"))
    with pytest.raises(SmaltoError, match="must divide by the 3 processes"):
        train(tmp_path / "y", micro(batch_size=4), progress=False, processes=Processes(0, 3, 0, "gloo"))
