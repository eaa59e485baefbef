"""Checkpoints: a self-contained directory, written atomically.

    DIR/model.safetensors      weights
    DIR/optimizer.safetensors  the optimizer's state (training checkpoints only)
    DIR/meta.json              format, model config, vocabulary (named ranges), training config, step,
                               data position
    DIR/tokenizers/            the text and image tokenizers the ids refer to

Nothing is unpickled: tensors are safetensors, everything else JSON. A checkpoint may come from
someone else, so every file is read through `paths.inside` (a symlink out of the directory is
refused), and a save that was killed half-way is recovered on reading (`atomic.recover`).

Format 2 stores the vocabulary as named ranges and the fused q/k/v and gate/up projections.
Format-1 checkpoints (smalto 0.1) still load: `migrate` is the one place that knows them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from smalto import atomic
from smalto.errors import SmaltoError
from smalto.model import ModelConfig, Transformer
from smalto.paths import inside
from smalto.format import Modality, Span, Vocab
from smalto.tokenizers import SPECIAL_TOKENS, Tokenizers, load_tokenizers
from smalto.weights import check_fits

FORMAT = "smalto-checkpoint/2"
FORMAT_1 = "smalto-checkpoint/1"
ADAPTER_FORMAT = "smalto-adapter/1"  # an adapter directory's adapter.json (smalto.adapters)
# How each fusion design reads a picture (smalto.model.fusion), for messages
READS = {"tokens": "as codes in the stream", "projector": "as ViT features in the codes' places",
         "xattn": "through gated cross-attention"}


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(path: str | Path, model: Transformer, vocab: Vocab, tokenizers: Tokenizers,
                    optimizer: torch.optim.Optimizer | None = None, extra: dict | None = None,
                    dtype: torch.dtype | None = None, files: dict[str, bytes] | None = None) -> Path:
    """Write (or replace) a checkpoint directory as a whole.

    `extra` goes into meta.json, `files` (name -> content: logs, plots) beside it, and `dtype`
    (e.g. bfloat16) shrinks the stored weights.
    """
    path = Path(path)
    with atomic.directory(path, overwrite=True) as tmp:
        weights = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
                   for k, v in model.state_dict().items() if k not in _untied_head(model.cfg)}
        atomic.write_bytes(tmp / "model.safetensors", save(weights))
        meta = {"format": FORMAT, "model": asdict(model.cfg), "vocab": vocab.to_json(), **(extra or {})}
        write_run_files(tmp, "meta.json", meta, optimizer, files)
        tokenizers.copy_to(tmp / "tokenizers")
    return path


def write_run_files(tmp: Path, meta_name: str, meta: dict, optimizer: torch.optim.Optimizer | None,
                    files: dict[str, bytes] | None) -> None:
    """Into a directory being written: the optimizer's state (recorded in `meta`), `meta` as JSON
    and the extra `files`."""
    if optimizer is not None:
        tensors, meta["optimizer"] = _optimizer_tensors(optimizer)
        atomic.write_bytes(tmp / "optimizer.safetensors", save(tensors))
    atomic.write_text(tmp / meta_name, json.dumps(meta, indent=2) + "\n")
    for name, content in (files or {}).items():
        atomic.write_bytes(tmp / name, content)


def read_adapter_json(path: str | Path) -> dict:
    """An adapter directory's adapter.json (`smalto.adapters` writes it and checks its settings)."""
    path = Path(path)
    atomic.recover(path)
    file = inside(path, "adapter.json", "file") if path.is_dir() else None
    if file is None or not file.is_file():
        raise SmaltoError(f"{path}: not an adapter directory (no adapter.json)")
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SmaltoError(f"{file}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != ADAPTER_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise SmaltoError(f"{file}: format {found!r} is not {ADAPTER_FORMAT!r}")
    return meta


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    atomic.recover(path)
    if not path.is_dir():
        raise SmaltoError(f"{path}: not a checkpoint directory")
    meta_file = inside(path, "meta.json", "file")
    if not meta_file.exists() and inside(path, "adapter.json", "file").is_file():  # a fine-tuning run's adapter
        return read_adapter_json(path)
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise SmaltoError(f"{path}: not a smalto checkpoint (no meta.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SmaltoError(f"{meta_file}: unreadable ({e})") from None
    if meta.get("format") not in (FORMAT, FORMAT_1):
        raise SmaltoError(f"{meta_file}: format {meta.get('format')!r} is not {FORMAT!r}")
    return meta


def migrate(meta: dict, weights: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """A format-1 checkpoint's meta and weights in format 2: the vocabulary's fixed fields become
    named ranges (an image's codes were a square grid), and the separate q/k/v and gate/up
    projections are stacked into the fused ones."""
    if meta.get("format") != FORMAT_1:
        return meta, weights
    old = meta["vocab"]
    side = math.isqrt(old["image_tokens"])
    vocab = Vocab({"text": Span(0, old["text_size"]), "image": Span(old["text_size"], old["codebook_size"])},
                  {name.removeprefix("<|").removesuffix("|>"): i for name, i in zip(SPECIAL_TOKENS, old["specials"])},
                  {"image": Modality("image", (side, side), "boi", "eoi")})
    weights = dict(weights)
    for key in [k for k in weights if k.endswith("attn.q_proj.weight")]:
        prefix = key.removesuffix("q_proj.weight")
        weights[f"{prefix}qkv_proj.weight"] = torch.cat([weights.pop(f"{prefix}{n}_proj.weight") for n in "qkv"])
    for key in [k for k in weights if k.endswith("mlp.gate_proj.weight")]:
        prefix = key.removesuffix("gate_proj.weight")
        weights[f"{prefix}gate_up_proj.weight"] = torch.cat([weights.pop(f"{prefix}{n}_proj.weight")
                                                            for n in ("gate", "up")])
    return {**meta, "format": FORMAT, "vocab": vocab.to_json()}, weights


def _untied_head(cfg: ModelConfig) -> tuple[str, ...]:
    """A tied head is the embedding: checkpoints do not store it twice."""
    return ("lm_head.weight",) if cfg.tie_embeddings else ()


def load_checkpoint(path: str | Path, fusion: str | None = None, needs: str = ""
                    ) -> tuple[Transformer, Vocab, Tokenizers, dict]:
    """(model in float32, vocab, tokenizers, meta in format 2). fusion: the design the caller
    needs (smalto.model.fusion), `needs` saying why; a model of another is refused."""
    path = Path(path)
    meta = read_meta(path)
    if "adapter" in meta:
        raise SmaltoError(f"{path}: is a {meta['adapter']['method']} adapter, not a model; load it on top of its base "
                          f"({meta['base']['path']}): --model BASE --adapter {path}, or smalto.load(base, adapter=...)")
    weights_file = inside(path, "model.safetensors", "file")
    try:
        cfg = ModelConfig(**meta["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise SmaltoError(f"{path / 'meta.json'}: config does not fit this version of smalto ({e})") from None
    if fusion is not None and cfg.fusion != fusion:
        raise SmaltoError(f"{path}: is a {cfg.fusion} model (it reads pictures {READS[cfg.fusion]}), not a {fusion} "
                          f"one" + (f": {needs}" if needs else "; its weights do not fit that design"))
    check_fits(weights_file, lambda: Transformer(cfg), "meta.json", skip=_untied_head(cfg))
    try:
        weights = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights_file)).items()}
    except Exception as e:  # safetensors raises several types for a bad file
        raise SmaltoError(f"{weights_file}: unreadable ({e})") from None
    try:
        meta, weights = migrate(meta, weights)
        vocab = Vocab.from_json(meta["vocab"])
    except (KeyError, TypeError, ValueError) as e:
        raise SmaltoError(f"{path / 'meta.json'}: vocabulary does not fit this version of smalto ({e})") from None
    model = Transformer(cfg)
    try:
        model.load_state_dict(weights, strict=not cfg.tie_embeddings)
    except Exception as e:  # torch raises several types for mismatched tensors
        raise SmaltoError(f"{weights_file}: does not fit the config in meta.json ({e})") from None
    if missing := set(model.state_dict()) - set(weights) - {"lm_head.weight"}:
        raise SmaltoError(f"{weights_file}: missing weights {sorted(missing)[:3]}")
    tokenizers = load_tokenizers(inside(path, "tokenizers", "directory"))
    try:
        made = Vocab.from_tokenizers(tokenizers, vocab.position_rule, vocab.sound, vocab.pattern)
    except ValueError as e:
        raise SmaltoError(f"{path}: the tokenizers in tokenizers/ do not match the model's vocabulary ({e})") from None
    if made != vocab.without_layouts():
        raise SmaltoError(f"{path}: the tokenizers in tokenizers/ do not match the model's vocabulary")
    if vocab.position_rule != cfg.position_rule:
        raise SmaltoError(f"{path / 'meta.json'}: a {cfg.rope} model needs the {cfg.position_rule!r} position rule, "
                          f"not {vocab.position_rule!r}")
    return model.eval(), vocab, tokenizers, meta


def load_optimizer(path: str | Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore the optimizer state saved with a training checkpoint."""
    meta = read_meta(path)
    if "optimizer" not in meta:
        raise SmaltoError(f"{path}: has no optimizer state to resume from")
    state: dict[int, dict] = {}
    tensors_file = inside(path, "optimizer.safetensors", "file")
    try:
        tensors = load_file(str(tensors_file))
        for key, value in {**tensors, **meta["optimizer"]["scalars"]}.items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    except Exception as e:  # a missing, corrupt or mismatched file: several exception types
        raise SmaltoError(f"{path}: optimizer state unreadable or does not fit the model ({e})") from None
