"""Seeing pixels instead of codes: the two fusion designs besides discrete tokens.

- projector (LLaVA; Janus's decoupled encoders): a small ViT gives one feature per 4x4 patch of
  the 32x32 picture, a two-layer MLP maps them to the decoder's width, and they replace the
  embeddings of the picture's 64 codes (same places, same positions). Drawing still writes codes.
- xattn (Flamingo, Llama 3.2 Vision): the picture is one marker token in the stream, and before
  every k-th decoder layer a gated cross-attention block lets each token attend to the features
  of the pictures read so far. Its gates start at tanh(0) = 0, so a fresh block is the identity
  and the decoder starts as the model it would be without pictures.

Both read the picture before the tokenizer's quantizer, so what quantization loses they keep;
both feed the decoder through the same ViT and projector (`VisionTower`).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smalto.model.config import ModelConfig
from smalto.model.layers import MLP, RMSNorm
from smalto.tokenizers.image import ImageTokenizerConfig, _encoder, to_tensor


class Images(NamedTuple):
    """The pictures a batch reads: row b's k-th picture starts at token `at[b, k]` (its <boi> for
    the projector, its marker for xattn; -1 where row b reads fewer)."""
    pixels: Tensor  # float [B, K, 3, H, W] in [-1, 1]
    at: Tensor  # int64 [B, K]

    def to(self, device: torch.device) -> Images:
        return Images(self.pixels.to(device), self.at.to(device))


def batch_images(rows: list[list[np.ndarray]], starts: list[list[int]]) -> Images | None:
    """Images for rows that read `rows[b]` (uint8 [H, W, 3] each) at token indices `starts[b]`;
    None when no row reads a picture."""
    k = max((len(r) for r in rows), default=0)
    if k == 0:
        return None
    if any(len(r) != len(s) for r, s in zip(rows, starts, strict=True)):
        raise ValueError(f"rows read {[len(s) for s in starts]} pictures but {[len(r) for r in rows]} were given")
    size = next(r[0] for r in rows if r).shape[:2]
    pixels = torch.zeros(len(rows), k, 3, *size)
    at = torch.full((len(rows), k), -1, dtype=torch.long)
    for b, (row, where) in enumerate(zip(rows, starts)):
        for j, (image, start) in enumerate(zip(row, where)):
            pixels[b, j] = to_tensor(image[None, ..., :3])[0]
            at[b, j] = start
    return Images(pixels, at)


class VisionTower(nn.Module):
    """Pixels [N, 3, H, W] -> features [N, patches, dim]: a stem (a linear map of each patch, or
    the image tokenizer's conv encoder), a pre-norm ViT, and a two-layer MLP into the decoder's width."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.vision_dim
        if cfg.vision_encoder is None:
            self.stem = nn.Conv2d(3, d, cfg.patch, stride=cfg.patch)
        else:
            encoder = ImageTokenizerConfig(**cfg.vision_encoder)  # (checked against the patches by ModelConfig)
            self.stem = nn.Sequential(_encoder(encoder), nn.Conv2d(encoder.latent_dim, d, 1))
        self.where = nn.Parameter(torch.randn((cfg.image_size // cfg.patch) ** 2, d) * 0.02)  # learned positions
        layer = nn.TransformerEncoderLayer(d, cfg.vision_heads, 4 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, cfg.vision_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.project = nn.Sequential(nn.Linear(d, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim))

    def forward(self, pixels: Tensor) -> Tensor:
        x = self.stem(pixels).flatten(2).transpose(1, 2) + self.where
        return self.project(self.norm(self.layers(x)))


class GatedCrossAttention(nn.Module):
    """x + tanh(a) * attend(x -> features), then x + tanh(m) * MLP(x), with a = m = 0 at first.
    A token that has no picture before it is left alone by both (as Llama 3.2 Vision masks them),
    so text alone reads exactly as in the decoder without these blocks."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.q_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.kv_proj = nn.Linear(cfg.dim, 2 * cfg.dim, bias=False)
        self.o_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.mlp_gate = nn.Parameter(torch.zeros(1))

    def memory(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values [B, heads, M, head_dim] of features [B, M, dim]: made once per prompt
        (a decoding step reads them from the cache)."""
        b, m, _ = features.shape
        k, v = self.kv_proj(features).view(b, m, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: Tensor, keys: Tensor, values: Tensor, seen: Tensor) -> Tensor:
        """seen [B, 1, T, M]: which features each token may attend to (those of pictures at or before it)."""
        b, t, _ = x.shape
        q = self.q_proj(self.norm(x)).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        some = seen.any(-1, keepdim=True)  # a token before any picture attends to nothing: zeroed below
        with torch.autocast("cpu", enabled=False) if x.device.type == "cpu" else nullcontext():  # (as Attention)
            out = F.scaled_dot_product_attention(q.float(), keys.float(), values.float(), attn_mask=seen | ~some)
        out = (out * some).to(x.dtype).transpose(1, 2).reshape(b, t, -1)
        x = x + torch.tanh(self.attn_gate).to(x.dtype) * self.o_proj(out)
        some = some[:, 0].to(x.dtype)  # [B, T, 1]
        return x + torch.tanh(self.mlp_gate).to(x.dtype) * self.mlp(self.mlp_norm(x)) * some
