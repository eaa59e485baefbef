"""A preallocated KV cache, so that a decoding step has the same shapes every time."""

from __future__ import annotations

import torch
from torch import Tensor

from smalto.model.config import ModelConfig


class KVCache:
    """Preallocated keys and values for every layer, plus which slots hold real tokens.

    New tokens are written into slots by index and attention always spans the whole cache under
    a mask, so a decoding step has the same shapes every time: what lets `torch.compile` turn it
    into one fixed program (`Engine.compile`).
    """

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int | None = None, dtype=torch.float32,
                 device: torch.device | str = "cpu"):
        self.max_len = max_len or cfg.max_seq_len
        shape = (batch, cfg.n_kv_heads, self.max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.valid = torch.zeros(batch, self.max_len, dtype=torch.bool, device=device)
        self.length = 0
        # xattn models: each cross-attention block's keys and values of the prompt's pictures, and
        # from which index each is visible (smalto.model.transformer.Transformer._cross)
        self.cross: tuple[list[tuple[Tensor, Tensor]], Tensor] | None = None

    def claim(self, t: int, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The next t slots [t], and the attention mask [B, 1, t, max_len] for tokens put there:
        each sees the real tokens up to itself, and always itself (a padding row then attends to
        something, so no NaNs)."""
        if self.length + t > self.max_len:
            raise ValueError(f"KV cache full: {self.length} + {t} > {self.max_len}")
        device = self.valid.device
        slots = torch.arange(self.length, self.length + t, device=device)
        self.valid[:, self.length:self.length + t] = True if valid is None else valid
        self.length += t
        keys = torch.arange(self.max_len, device=device)
        mask = ((keys <= slots[:, None]) & self.valid[:, None, :]) | (keys == slots[:, None])
        return slots, mask.unsqueeze(1)

    def reorder(self, rows: Tensor) -> None:
        """Keep (and duplicate) batch rows, e.g. when beams are re-ranked."""
        self.k = [k[rows] for k in self.k]
        self.v = [v[rows] for v in self.v]
        self.valid = self.valid[rows]
        if self.cross is not None:
            memory, start = self.cross
            self.cross = [(k[rows], v[rows]) for k, v in memory], start[rows]
