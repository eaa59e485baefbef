"""Adapters: a few trained weights on top of a frozen base model, saved apart from it.

    lora    low-rank updates W + (alpha / rank) B A of the blocks' linear layers (Hugging Face peft)
    prompt  `tokens` learned input embeddings before every sequence (prompt tuning, native: peft's
            assumes a transformers model)

    model, vocab, tokenizers, _ = load_checkpoint(base)
    attach(model, AdapterConfig("lora"))        # fresh adapter; only its weights train
    save_adapter(dir, model, vocab, tokenizers) # adapter.json + adapter.safetensors
    load_adapter(model, vocab, dir)             # on the same base (checked), e.g. smalto.load(base, adapter=dir)
    merge(model)                                # LoRA folded into the weights: a plain model again

LoRA targets the fused projections as they are stored: q/k/v share one A (the input side) with
one B whose rows are the q, k and v outputs, and likewise gate/up. The update is then rank-r for
the three together rather than r each; for the same rank it has fewer weights than three
separate pairs, and it merges into the fused matrix exactly.

An adapter records its base's fingerprint (a hash of the weights in bfloat16, so a base packed
to bf16 still matches) and refuses any other base.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import load_file, save
from torch import nn

from smalto import atomic
from smalto.checkpoint import ADAPTER_FORMAT as FORMAT, read_adapter_json, write_run_files
from smalto.errors import SmaltoError
from smalto.format import Vocab
from smalto.model import Transformer
from smalto.options import Range
from smalto.paths import inside

METHODS = ("lora", "prompt")
LORA_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


@dataclass(frozen=True)
class AdapterConfig:
    method: str  # "lora" or "prompt"
    rank: int = 8  # LoRA: rank of each update
    alpha: float = 16.0  # LoRA: the update is scaled by alpha / rank
    dropout: float = 0.0  # LoRA: dropout on the adapter's input
    targets: tuple[str, ...] = LORA_TARGETS  # LoRA: the linear layers adapted (module names)
    tokens: int = 8  # prompt tuning: learned embeddings before every sequence

    RANGES: ClassVar[dict[str, Range]] = {"rank": Range(1, integer=True), "alpha": Range(0, low_open=True),
                                          "dropout": Range(0, 1), "tokens": Range(1, 64, integer=True)}

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SmaltoError(f"adapter method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name, valid in self.RANGES.items():
            valid.check(getattr(self, name), name)
        object.__setattr__(self, "targets", tuple(self.targets))
        if unknown := set(self.targets) - set(LORA_TARGETS):
            raise SmaltoError(f"LoRA targets must be some of {', '.join(LORA_TARGETS)}, got {sorted(unknown)}")


class PromptTokens(nn.Module):
    """The learned embeddings [tokens, dim] the model puts before every sequence (see
    `Transformer.forward`), initialised from the embeddings of random vocabulary entries, which
    trains better than noise (Lester et al., 2021)."""

    def __init__(self, embed: nn.Embedding, tokens: int, seed: int = 0):
        super().__init__()
        pick = torch.randint(embed.num_embeddings, (tokens,), generator=torch.Generator().manual_seed(seed))
        self.embeds = nn.Parameter(embed.weight.detach()[pick].clone())


def fingerprint(model: Transformer) -> str:
    """A hash of the base weights (adapters excluded), rounded to bfloat16."""
    h = hashlib.sha256()
    for name, value in sorted(base_state(model).items()):
        h.update(name.encode())
        h.update(value.detach().to(torch.bfloat16).cpu().contiguous().view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


def base_state(model: Transformer) -> dict[str, torch.Tensor]:
    """The base model's weights by their plain names (peft's wrappers see through)."""
    out = {}
    for name, value in model.state_dict().items():
        if "lora_" in name or name.startswith("prompt."):
            continue
        out[name.replace(".base_layer.", ".")] = value
    return out


def attached(model: Transformer) -> str | None:
    """The method of the adapter on the model, or None."""
    if model.prompt is not None:
        return "prompt"
    return "lora" if any("lora_" in name for name, _ in model.named_parameters()) else None


def attach(model: Transformer, cfg: AdapterConfig, seed: int = 0) -> int:
    """Add a fresh adapter and freeze everything else; returns its number of weights."""
    from peft import LoraConfig, inject_adapter_in_model

    if attached(model):
        raise SmaltoError(f"the model already carries a {attached(model)} adapter")
    for p in model.parameters():
        p.requires_grad_(False)
    if cfg.method == "lora":
        inject_adapter_in_model(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                           target_modules=list(cfg.targets)), model)
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
    else:
        model.prompt = PromptTokens(model.embed, cfg.tokens, seed).to(model.embed.weight.device)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def adapter_state(model: Transformer) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    if model.prompt is not None:
        return {"prompt.embeds": model.prompt.embeds.detach()}
    return {k: v.detach() for k, v in get_peft_model_state_dict(model).items()}


def save_adapter(path: str | Path, model: Transformer, vocab: Vocab, cfg: AdapterConfig, base: str,
                 optimizer: torch.optim.Optimizer | None = None, extra: dict | None = None,
                 files: dict[str, bytes] | None = None) -> Path:
    """Write (or replace) an adapter directory as a whole: adapter.json (method, settings, the
    base's fingerprint and where it was), adapter.safetensors, and for training runs the
    optimizer's state, `extra` (step, training config) and `files` (logs, plots)."""
    path = Path(path)
    with atomic.directory(path, overwrite=True) as tmp:
        tensors = {k: v.float().contiguous() for k, v in adapter_state(model).items()}
        atomic.write_bytes(tmp / "adapter.safetensors", save(tensors))
        base_id = {"path": str(base), "fingerprint": fingerprint(model)}
        meta = {"format": FORMAT, "adapter": asdict(cfg), "base": base_id, "vocab": vocab.to_json(), **(extra or {})}
        write_run_files(tmp, "adapter.json", meta, optimizer, files)
    return path


def read_adapter(path: str | Path) -> dict:
    meta = read_adapter_json(path)
    try:
        AdapterConfig(**meta["adapter"])
    except (KeyError, TypeError) as e:
        raise SmaltoError(f"{Path(path) / 'adapter.json'}: unreadable ({e})") from None
    return meta


def load_adapter(model: Transformer, vocab: Vocab, path: str | Path, trainable: bool = False) -> dict:
    """Attach the adapter saved in `path` to its base `model` (its weights trainable, or frozen
    for inference); returns its adapter.json. A base other than the one it was trained on is an
    error naming both."""
    from peft.utils import set_peft_model_state_dict

    path = Path(path)
    meta = read_adapter(path)
    cfg = AdapterConfig(**meta["adapter"])
    want, have = meta["base"].get("fingerprint"), fingerprint(model)
    if want != have or Vocab.from_json(meta["vocab"]) != vocab:
        raise SmaltoError(f"{path}: this adapter was trained on another base model ({meta['base'].get('path')}, "
                          f"fingerprint {want}; this one's is {have}); load it on top of the model it was trained on")
    weights_file = inside(path, "adapter.safetensors", "file")
    try:
        weights = load_file(str(weights_file))
    except Exception as e:  # safetensors raises several types for a bad file
        raise SmaltoError(f"{weights_file}: unreadable ({e})") from None
    attach(model, cfg)
    device = model.embed.weight.device
    try:
        if cfg.method == "prompt":
            if set(weights) != {"prompt.embeds"} or weights["prompt.embeds"].shape != model.prompt.embeds.shape:
                raise ValueError(f"expected prompt.embeds {tuple(model.prompt.embeds.shape)}")
            model.prompt.embeds.data.copy_(weights["prompt.embeds"])
        else:
            expected = set(adapter_state(model))
            if set(weights) != expected:
                raise ValueError(f"{len(set(weights) ^ expected)} weight names differ from the config's")
            result = set_peft_model_state_dict(model, {k: v.to(device) for k, v in weights.items()})
            if getattr(result, "unexpected_keys", None):
                raise ValueError(f"unexpected weights {result.unexpected_keys[:3]}")
    except (ValueError, RuntimeError) as e:
        raise SmaltoError(f"{weights_file}: does not fit adapter.json ({e})") from None
    if not trainable:
        for p in model.parameters():
            p.requires_grad_(False)
    return meta


def merge(model: Transformer) -> Transformer:
    """Fold a LoRA adapter into the base weights and remove it: the model is a plain Transformer
    again, computing what base + adapter computed (up to float rounding). Prompt tuning cannot be
    folded into weights: an error."""
    from peft.tuners.lora import LoraLayer

    if model.prompt is not None:
        raise SmaltoError("prompt tuning adds input embeddings, which no weight can hold: it cannot be merged")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, name, child.get_base_layer())
    return model
