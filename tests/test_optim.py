"""The training optimizers (AdamW; Muon for the blocks' matrices) and the compiled training step."""

import json

import numpy as np
import pytest
import torch

from smalto.checkpoint import load_checkpoint
from smalto.model import Transformer, preset
from smalto.training.optim import Muon, MuonAdamW, build_optimizer
from smalto.training.trainer import TrainConfig, train


def micro(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(preset="shapes-micro", steps=6, batch_size=8, warmup=2, log_every=1,
                                 eval_every=0, save_every=3, optimizer="muon"), **kw})


def losses(log):
    return [r["loss"] for r in log if "loss" in r]


def names_in(model, groups) -> set[str]:
    ids = {id(p) for g in groups for p in g["params"]}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_muon_takes_the_blocks_matrices_and_adamw_everything_else_that_trains():
    model = Transformer(preset("shapes-micro", 300))
    model.layers[0].mlp.down_proj.weight.requires_grad_(False)
    opt = build_optimizer(model, "muon", 1e-3, 0.1)
    assert isinstance(opt, MuonAdamW)
    muon = names_in(model, opt._muon.param_groups)
    adamw = names_in(model, opt._adamw.param_groups)
    matrices = {n for n, p in model.named_parameters() if p.ndim == 2 and n.startswith("layers.")}
    assert muon == matrices - {"layers.0.mlp.down_proj.weight"}
    assert adamw == {n for n, p in model.named_parameters() if p.requires_grad} - matrices
    assert "embed.weight" in adamw and all(model.get_parameter(n).ndim == 1 for n in adamw - {"embed.weight"})
    # one list of groups, shared with the two optimizers: a schedule that sets lr sets it for both
    for group in opt.param_groups:
        group["lr"] = 0.5
    assert {g["lr"] for g in opt._muon.param_groups + opt._adamw.param_groups} == {0.5}


def test_a_muon_step_orthogonalises_the_update_of_a_matrix():
    torch.manual_seed(0)
    model = Transformer(preset("shapes-micro", 300))
    opt = build_optimizer(model, "muon", 1e-2, 0.0)
    w = model.layers[0].attn.o_proj.weight
    before = w.detach().clone()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    update = (before - w.detach()).float()
    s = torch.linalg.svdvals(update)
    # Newton-Schulz leaves singular values near one another (not exactly equal: 5 quintic steps)
    assert s.max() / s.min() < 3, s
    grad_s = torch.linalg.svdvals(w.grad)
    assert grad_s.max() / grad_s.min() > 3 * (s.max() / s.min())


def test_a_paused_and_resumed_muon_run_matches_an_uninterrupted_one(tmp_path):
    whole = train(tmp_path / "whole", micro(), progress=False)
    train(tmp_path / "split", micro(), progress=False, pause_at=3)
    resumed = train(tmp_path / "split", micro(), resume=True, progress=False)
    np.testing.assert_allclose(losses(resumed), losses(whole), rtol=1e-5)
    a, *_ = load_checkpoint(tmp_path / "whole")
    b, *_ = load_checkpoint(tmp_path / "split")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6, msg=name)
    seconds = [r["seconds"] for r in resumed if "seconds" in r]  # wall clock, carried across the resume
    assert len(seconds) == 6 and seconds == sorted(seconds) and seconds[0] > 0
    groups = json.loads((tmp_path / "split" / "meta.json").read_text())["optimizer"]["param_groups"]
    assert [("momentum" in g) for g in groups] == [False, False, True]  # AdamW's two groups, then Muon's


def test_muon_lowers_the_loss_faster_than_chance_and_differs_from_adamw(tmp_path):
    cfg = dict(steps=40, batch_size=16, lr=3e-3, warmup=5, save_every=40, log_every=5)
    muon = losses(train(tmp_path / "muon", micro(**cfg), progress=False))
    adamw = losses(train(tmp_path / "adamw", micro(**cfg, optimizer="adamw"), progress=False))
    assert muon[-1] < 0.7 * muon[0]
    assert muon[0] == pytest.approx(adamw[0], rel=1e-5)  # same weights and batch before the first step
    assert abs(muon[-1] - adamw[-1]) > 1e-3


def test_runs_saved_before_the_optimizer_was_a_choice_resume_with_adamw():
    fields = {k: v for k, v in micro().__dict__.items() if k != "optimizer"}
    assert TrainConfig.saved(fields).optimizer == "adamw"
    assert TrainConfig.saved({**fields, "optimizer": "muon"}).optimizer == "muon"


@pytest.mark.slow  # compiling takes about a minute on 2 cores: `make test-slow`
def test_a_compiled_run_computes_what_an_eager_run_does_and_resumes_either_way(tmp_path):
    cfg = micro(steps=4, save_every=2, precision="fp32")
    eager = train(tmp_path / "eager", cfg, progress=False)
    train(tmp_path / "compiled", micro(steps=4, save_every=2, precision="fp32", compile=True), progress=False,
          pause_at=2)
    resumed = train(tmp_path / "compiled", cfg, resume=True, progress=False)  # compile may change on resume
    np.testing.assert_allclose(losses(resumed), losses(eager), rtol=1e-4)


def test_batched_muon_makes_torchs_updates_and_state():
    torch.manual_seed(0)
    a, b = Transformer(preset("shapes-micro", 300)), Transformer(preset("shapes-micro", 300))
    b.load_state_dict(a.state_dict())
    ours = Muon([p for p in a.parameters() if p.ndim == 2], lr=1e-2, adjust_lr_fn="match_rms_adamw")
    theirs = torch.optim.Muon([p for p in b.parameters() if p.ndim == 2], lr=1e-2, adjust_lr_fn="match_rms_adamw")
    for _ in range(3):
        for p, q in zip(a.parameters(), b.parameters()):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        ours.step()
        theirs.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)
    theirs.load_state_dict(ours.state_dict())  # the same state: checkpoints move between the two
