"""Weights from someone else's file: the config is checked against the file before allocating.

A checkpoint's `meta.json` (or a tokenizer's `image.json`) says how large a model to build. If it
said `dim: 1000000`, building the model first would allocate terabytes before the weights were
found not to fit. `check_fits` builds a skeleton on PyTorch's meta device (shapes, no memory),
counts the numbers it needs, and compares them with what the safetensors header says the file
holds, before anything real is built. `save_module` / `load_module` keep a small module (the
audio codec, the speech recogniser) as `<stem>.json` (its config) beside `<stem>.safetensors`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import nn

from smalto import atomic
from smalto.errors import SmaltoError
from smalto.paths import inside


def stored_numel(path: str | Path) -> int:
    """How many numbers a safetensors file holds, read from its header alone."""
    try:
        with safe_open(str(path), "pt") as f:
            return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    except Exception as e:  # safetensors raises several types for missing or malformed files
        raise SmaltoError(f"{path}: not a readable safetensors file ({e})") from None


def check_fits(path: str | Path, build: Callable[[], nn.Module], config: str, skip: tuple[str, ...] = ()) -> None:
    """Refuse `path` unless it holds exactly the numbers the module `build()` makes needs
    (state-dict entries named in `skip`, e.g. a tied head, are not stored)."""
    with torch.device("meta"):
        skeleton = build()
    needed = sum(v.numel() for name, v in skeleton.state_dict().items() if name not in skip)
    stored = stored_numel(path)
    if stored != needed:
        raise SmaltoError(f"{path}: does not fit the config in {config} (the file holds {stored:,} weights, "
                          f"the config needs {needed:,})")


def save_module(module: nn.Module, config: Any, directory: str | Path, stem: str) -> None:
    """`stem`.safetensors (the weights) and `stem`.json (the dataclass `config`), each written atomically."""
    directory = Path(directory)
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    atomic.write_bytes(directory / f"{stem}.safetensors", save(state))
    atomic.write_text(directory / f"{stem}.json", json.dumps(asdict(config), indent=2) + "\n")


def load_module(directory: str | Path, stem: str, what: str, config: Callable[[dict], Any],
                build: Callable[[Any], nn.Module]) -> nn.Module:
    """The module `save_module` wrote, in eval mode: both files inside `directory`, the json parsed
    by `config(raw)`, the weights checked to fit `build(cfg)` before it is built; a SmaltoError
    naming the file for anything missing or wrong (`what` says what the directory should hold)."""
    cfg_path, weights = (inside(directory, f"{stem}.{ext}", "file") for ext in ("json", "safetensors"))
    for f in (cfg_path, weights):
        if not f.is_file():
            raise SmaltoError(f"{f}: missing (not {what} directory?)")
    try:
        cfg = config(json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, TypeError, AttributeError) as e:
        raise SmaltoError(f"{cfg_path}: not {what} config ({e})") from None
    check_fits(weights, lambda: build(cfg), cfg_path.name)
    module = build(cfg)
    try:
        module.load_state_dict(load_file(str(weights)))
    except Exception as e:  # safetensors and torch raise several types for bad files
        raise SmaltoError(f"{weights}: weights do not fit the config in {cfg_path.name} ({e})") from None
    return module.eval()
