"""Weights from someone else's file: the config is checked against the file before allocating.

A checkpoint's `meta.json` (or a tokenizer's `image.json`) says how large a model to build. If it
said `dim: 1000000`, building the model first would allocate terabytes before the weights were
found not to fit. `check_fits` builds a skeleton on PyTorch's meta device (shapes, no memory),
counts the numbers it needs, and compares them with what the safetensors header says the file
holds, before anything real is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from smalto.errors import SmaltoError


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
