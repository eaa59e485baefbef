"""Checkpoint formats: format 2 round-trips; format 1 (smalto 0.1, separate projections, the
vocabulary as fixed fields) loads through `migrate` and gives the same logits."""

import json
from dataclasses import replace

import torch
from safetensors.torch import load_file, save_file

from smalto.checkpoint import FORMAT, load_checkpoint, read_meta, save_checkpoint
from smalto.format import Vocab
from smalto.model import Transformer, preset
from smalto.pipeline import DEFAULT_MODEL
from smalto.tokenizers import SPECIAL_TOKENS, load_tokenizers

TOK = replace(load_tokenizers(), video=None)  # smalto 0.1 had no video tokenizer
V = Vocab.from_tokenizers(TOK)


def to_format_1(path) -> None:
    """Rewrite a checkpoint directory the way smalto 0.1 wrote it."""
    meta = json.loads((path / "meta.json").read_text())
    v = Vocab.from_json(meta["vocab"])
    meta["format"] = "smalto-checkpoint/1"
    meta["vocab"] = {"text_size": v.text_size, "codebook_size": v.ranges["image"].size, "image_tokens": 64,
                     "specials": [v.specials[t[2:-2]] for t in SPECIAL_TOKENS],
                     **{name: v.specials[name] for name in ("bos", "eos", "pad", "boi", "eoi", "user", "assistant")}}
    cfg = preset("shapes-micro", V.size)
    sizes = [cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim]
    old = {}
    for name, tensor in load_file(path / "model.safetensors").items():
        if name.endswith("qkv_proj.weight"):
            old |= {name.replace("qkv", x): t.contiguous() for x, t in zip("qkv", tensor.split(sizes))}
        elif name.endswith("gate_up_proj.weight"):
            gate, up = tensor.chunk(2)
            old |= {name.replace("gate_up", "gate"): gate.contiguous(), name.replace("gate_up", "up"): up.contiguous()}
        else:
            old[name] = tensor
    save_file(old, path / "model.safetensors")
    (path / "meta.json").write_text(json.dumps(meta))


def test_a_format_1_checkpoint_loads_with_the_same_vocabulary_and_logits(tmp_path):
    torch.manual_seed(0)
    model = Transformer(preset("shapes-micro", V.size)).eval()
    save_checkpoint(tmp_path / "new", model, V, TOK)
    save_checkpoint(tmp_path / "old", model, V, TOK)
    to_format_1(tmp_path / "old")
    assert read_meta(tmp_path / "old")["format"] == "smalto-checkpoint/1"
    assert "layers.0.attn.q_proj.weight" in load_file(tmp_path / "old" / "model.safetensors")
    old, v_old, _, meta = load_checkpoint(tmp_path / "old")
    new, v_new, _, _ = load_checkpoint(tmp_path / "new")
    assert meta["format"] == FORMAT and v_old == v_new == V
    ids = torch.randint(0, V.size, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(old(ids).logits, model(ids).logits, rtol=0, atol=0)
        torch.testing.assert_close(new(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_the_shipped_model_is_format_2_with_fused_projections():
    assert read_meta(DEFAULT_MODEL)["format"] == FORMAT
    names = load_file(DEFAULT_MODEL / "model.safetensors").keys()
    assert "layers.0.attn.qkv_proj.weight" in names and "layers.0.attn.q_proj.weight" not in names
    shipped = Vocab.from_json(read_meta(DEFAULT_MODEL)["vocab"])
    assert shipped.without_layouts() == Vocab.from_tokenizers(load_tokenizers(DEFAULT_MODEL / "tokenizers"),
                                                              sound=shipped.sound, pattern=shipped.pattern)
    assert shipped.drawn("image") == "cells"  # v5 draws cell by cell (docs/compose.md)


def test_the_vocabulary_round_trips_through_json():
    assert Vocab.from_json(json.loads(json.dumps(V.to_json()))) == V
    assert list(V.ranges) == ["text", "image"] and V.ranges["image"].start == V.text_size
    assert V.image.grid == (8, 8) and V.image_tokens == 64
