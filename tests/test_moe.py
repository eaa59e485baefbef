"""Mixture of experts: each token gets exactly its K best experts, mixed by renormalised router
probabilities; the auxiliary losses reach training; cached decoding equals the full pass."""

import json

import pytest
import torch
import torch.nn.functional as F

from smalto.model import KVCache, ModelConfig, Transformer, preset
from smalto.model.moe import MoE
from smalto.training.trainer import TrainConfig, train


def moe(experts=4, active=2) -> MoE:
    torch.manual_seed(0)
    return MoE(ModelConfig(vocab_size=10, dim=16, n_layers=2, n_heads=2, n_kv_heads=1, mlp_hidden=24,
                           experts=experts, active_experts=active))


def test_every_token_is_its_k_best_experts_mixed_by_renormalised_probabilities():
    layer = moe()
    x = torch.randn(3, 5, 16)
    out, _ = layer(x)
    flat = x.reshape(-1, 16)
    probs = layer.router(flat).softmax(-1)
    for i, token in enumerate(flat):
        top = probs[i].topk(2)
        expected = sum(w / top.values.sum() * _expert(layer, e, token) for w, e in zip(top.values, top.indices))
        torch.testing.assert_close(out.reshape(-1, 16)[i], expected, atol=1e-5, rtol=1e-4)
    assert layer.last_choice.shape == (15, 2)


def _expert(layer: MoE, e: int, token: torch.Tensor) -> torch.Tensor:
    gate, up = (layer.gate_up_proj[e] @ token).chunk(2)
    return layer.down_proj[e] @ (F.silu(gate) * up)


def test_the_balance_loss_is_1_when_routing_is_uniform_and_grows_when_it_collapses():
    layer = moe()
    cfg = layer.cfg
    logits = torch.zeros(8, 4)
    uniform = torch.arange(8).repeat(2).view(8, 2) % 4
    collapsed = torch.zeros(8, 2, dtype=torch.long)
    z = torch.logsumexp(logits, -1).pow(2).mean()
    balanced = layer.aux_loss(logits, logits.softmax(-1), uniform)
    torch.testing.assert_close(balanced, cfg.balance_weight * 1.0 + cfg.z_weight * z)
    peaked = torch.tensor([[5.0, 0, 0, 0]]).repeat(8, 1)
    assert layer.aux_loss(peaked, peaked.softmax(-1), collapsed) > balanced


def test_cached_decoding_equals_the_full_pass_and_active_parameters_match_dense():
    torch.manual_seed(1)
    model = Transformer(preset("shapes-micro", 97, experts=4, active_experts=2)).eval()
    dense = preset("shapes-micro", 97)
    assert model.cfg.mlp_hidden * model.cfg.active_experts == dense.mlp_hidden
    ids = torch.randint(0, 97, (2, 24))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache(model.cfg, 2)
        steps = [model(ids[:, :10], cache=cache).logits] + [model(ids[:, t:t + 1], cache=cache).logits
                                                             for t in range(10, 24)]
    torch.testing.assert_close(torch.cat(steps, 1), full.logits, atol=1e-5, rtol=1e-4)
    assert full.aux_loss > 0
    with pytest.raises(ValueError, match="experts"):
        ModelConfig(vocab_size=97, experts=1)


def test_training_a_mixture_of_experts_logs_its_auxiliary_loss_and_learns(tmp_path):
    cfg = TrainConfig(preset="shapes-micro", steps=30, batch_size=8, eval_every=0, save_every=30, lr=3e-3,
                      warmup=5, experts=4, active_experts=2)
    log = train(tmp_path / "moe", cfg, progress=False)
    rows = [r for r in log if "loss" in r]
    assert all(r["aux_loss"] > 0 for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5
    meta = json.loads((tmp_path / "moe" / "meta.json").read_text())
    assert meta["model"]["experts"] == 4 and meta["model"]["active_experts"] == 2


def test_expert_usage_gives_each_modality_a_share_per_expert():
    from smalto.eval.experts import expert_usage
    from smalto.format import Span, Vocab

    torch.manual_seed(2)
    model = Transformer(preset("shapes-micro", 97, experts=4, active_experts=2)).eval()
    vocab = Vocab({"text": Span(0, 60), "image": Span(60, 37)}, {"pad": 0})
    ids = torch.cat([torch.randint(1, 60, (2, 10)), torch.randint(60, 97, (2, 10))], 1)
    usage = expert_usage(model, vocab, ids)
    assert set(usage) == {"text", "image"}
    for shares in usage.values():
        assert len(shares) == model.cfg.n_layers
        assert all(abs(sum(layer) - 1) < 1e-6 and len(layer) == 4 for layer in shares)
