"""Checkpoints: a self-contained directory, written atomically.

    DIR/model.safetensors      weights
    DIR/optimizer.safetensors  AdamW moments (training checkpoints only)
    DIR/meta.json              model config, vocabulary, training config, step, data position
    DIR/tokenizers/            the text and image tokenizers the ids refer to

Nothing is unpickled: tensors are safetensors, everything else JSON. A checkpoint may come from
someone else, so every file is read through `paths.inside` (a symlink out of the directory is
refused), and a save that was killed half-way is recovered on reading (`atomic.recover`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from smalto import atomic, options
from smalto.errors import SmaltoError
from smalto.model import ModelConfig, Transformer
from smalto.paths import inside
from smalto.sequence import Vocab
from smalto.tokenizers import Tokenizers, load_tokenizers
from smalto.weights import check_fits

FORMAT = "smalto-checkpoint/1"


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
        meta = {"format": FORMAT, "model": asdict(model.cfg), "vocab": asdict(vocab), **(extra or {})}
        if optimizer is not None:
            tensors, opt_meta = _optimizer_tensors(optimizer)
            atomic.write_bytes(tmp / "optimizer.safetensors", save(tensors))
            meta["optimizer"] = opt_meta
        atomic.write_text(tmp / "meta.json", json.dumps(meta, indent=2) + "\n")
        for name, content in (files or {}).items():
            atomic.write_bytes(tmp / name, content)
        tokenizers.copy_to(tmp / "tokenizers")
    return path


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    atomic.recover(path)
    if not path.is_dir():
        raise SmaltoError(f"{path}: not a checkpoint directory")
    meta_file = inside(path, "meta.json", "file")
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise SmaltoError(f"{path}: not a smalto checkpoint (no meta.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SmaltoError(f"{meta_file}: unreadable ({e})") from None
    if meta.get("format") != FORMAT:
        raise SmaltoError(f"{meta_file}: format {meta.get('format')!r} is not {FORMAT!r}")
    return meta


def fuse_projections(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints written before q/k/v and gate/up were fused (smalto 0.1; the shipped model is
    one) load as they are: their separate projections are stacked into the fused ones."""
    for key in [k for k in weights if k.endswith("attn.q_proj.weight")]:
        prefix = key.removesuffix("q_proj.weight")
        weights[f"{prefix}qkv_proj.weight"] = torch.cat([weights.pop(f"{prefix}{n}_proj.weight") for n in "qkv"])
    for key in [k for k in weights if k.endswith("mlp.gate_proj.weight")]:
        prefix = key.removesuffix("gate_proj.weight")
        weights[f"{prefix}gate_up_proj.weight"] = torch.cat([weights.pop(f"{prefix}{n}_proj.weight")
                                                            for n in ("gate", "up")])
    return weights


def _untied_head(cfg: ModelConfig) -> tuple[str, ...]:
    """A tied head is the embedding: checkpoints do not store it twice."""
    return ("lm_head.weight",) if cfg.tie_embeddings else ()


def load_checkpoint(path: str | Path) -> tuple[Transformer, Vocab, Tokenizers, dict]:
    """(model in float32, vocab, tokenizers, meta)."""
    path = Path(path)
    meta = read_meta(path)
    try:
        cfg = ModelConfig(**meta["model"])
        vocab = Vocab(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["vocab"].items()})
    except (TypeError, ValueError) as e:
        raise SmaltoError(f"{path / 'meta.json'}: config does not fit this version of smalto ({e})") from None
    tokenizers = load_tokenizers(inside(path, "tokenizers", "directory"))
    if Vocab.from_tokenizers(tokenizers) != vocab:
        raise SmaltoError(f"{path}: the tokenizers in tokenizers/ do not match the model's vocabulary")
    weights_file = inside(path, "model.safetensors", "file")
    check_fits(weights_file, lambda: Transformer(cfg), "meta.json", skip=_untied_head(cfg))
    model = Transformer(cfg)
    try:
        weights = fuse_projections({k: v.float() if v.is_floating_point() else v
                                    for k, v in load_file(str(weights_file)).items()})
        model.load_state_dict(weights, strict=not cfg.tie_embeddings)
        missing = set(model.state_dict()) - set(weights) - {"lm_head.weight"}
        if missing:
            raise SmaltoError(f"{path / 'model.safetensors'}: missing weights {sorted(missing)[:3]}")
    except SmaltoError:
        raise
    except Exception as e:  # safetensors / torch raise several types for bad or mismatched files
        raise SmaltoError(f"{path / 'model.safetensors'}: does not fit the config in meta.json ({e})") from None
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


def pack(src: str | Path, dst: str | Path, dtype: torch.dtype | None = torch.bfloat16,
         draw: dict | None = None) -> Path:
    """An inference-only copy of a run: no optimizer state, weights in `dtype`, optional drawing
    defaults (guidance, temperature, ...) stored for `smalto.load` to use."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and not (dst / "meta.json").is_file():
        raise SmaltoError(f"{dst}: exists and is not a checkpoint; refusing to replace it")
    for name, value in (draw or {}).items():
        options.check(name, value)
    model, vocab, tokenizers, meta = load_checkpoint(src)
    extra = {k: meta[k] for k in ("step", "train") if k in meta}
    extra["draw"] = {**meta.get("draw", {}), **(draw or {})}
    files = {}
    for name in ("log.jsonl", "loss.png", "samples.png"):
        if (file := inside(src, name, "file")).is_file():
            files[name] = file.read_bytes()
    return save_checkpoint(dst, model, vocab, tokenizers, extra=extra, dtype=dtype, files=files)
