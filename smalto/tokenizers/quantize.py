"""Quantizers: continuous vectors -> discrete codes -> vectors again.

Both share one small interface, so an image tokenizer can swap them by config:

    out = quantizer(z)          # z [..., dim]  ->  out.z_q [..., dim], out.codes [...], out.aux_loss []
    quantizer.codes_to_z(codes) # codes [...]   ->  [..., dim]
    quantizer.codebook_size

Gradients pass through the rounding step unchanged (straight-through estimator); each
quantizer's own losses come back as `aux_loss`, ready to add to the reconstruction loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smalto.errors import SmaltoError


class QuantizerOutput(NamedTuple):
    z_q: Tensor  # quantized vectors, same shape as the input, straight-through gradients
    codes: Tensor  # int64 code ids, the input's shape without the last dimension
    aux_loss: Tensor  # scalar: the quantizer's own training losses, already weighted


def entropy(probs: Tensor, dim: int = -1) -> Tensor:
    return -(probs * probs.clamp_min(1e-9).log()).sum(dim)


class VectorQuantizer(nn.Module):
    """VQ with a low-dimensional, l2-normalised codebook (ViT-VQGAN's factorised codes).

    Vectors are projected to `code_dim` dimensions and normalised, so a lookup is a cosine
    similarity and every code is equally reachable. Losses: codebook (pull codes to encoder
    outputs) + beta * commitment (pull encoder outputs to codes). Codes whose running usage
    falls below `dead_threshold` uses per batch are restarted on random encoder outputs of
    the current batch, so the codebook does not collapse to a few entries.
    """

    def __init__(self, dim: int, codebook_size: int = 512, code_dim: int = 8, beta: float = 0.25,
                 usage_decay: float = 0.99, dead_threshold: float = 0.03):
        super().__init__()
        self.codebook_size = codebook_size
        self.beta = beta
        self.usage_decay = usage_decay
        self.dead_threshold = dead_threshold
        self.proj_in = nn.Linear(dim, code_dim)
        self.proj_out = nn.Linear(code_dim, dim)
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim))
        self.register_buffer("usage", torch.ones(codebook_size))  # running uses per batch
        self.restarted = 0  # codes restarted by the last training step

    def embed(self, z: Tensor) -> Tensor:
        return F.normalize(self.proj_in(z), dim=-1)

    def forward(self, z: Tensor) -> QuantizerOutput:
        e = self.embed(z)
        if self.training:
            # Before the codebook is read, so the autograd graph only sees the new codes.
            self.restart_dead_codes(e.detach())
        codebook = F.normalize(self.codebook, dim=-1)
        codes = (e @ codebook.T).argmax(-1)
        q = codebook[codes]
        aux = F.mse_loss(q, e.detach()) + self.beta * F.mse_loss(e, q.detach())
        if self.training:
            counts = torch.bincount(codes.flatten(), minlength=self.codebook_size).float()
            self.usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        q = e + (q - e).detach()
        return QuantizerOutput(self.proj_out(q), codes, aux)

    @torch.no_grad()
    def restart_dead_codes(self, e: Tensor) -> None:
        """Move codes used less than `dead_threshold` times per batch onto random vectors of e."""
        dead = (self.usage < self.dead_threshold).nonzero().flatten()
        self.restarted = len(dead)
        if len(dead):
            flat = e.reshape(-1, e.shape[-1])
            picks = flat[torch.randint(len(flat), (len(dead),), device=flat.device)]
            self.codebook[dead] = picks + 0.01 * torch.randn_like(picks)
            self.usage[dead] = self.usage.mean()  # a grace period before it can die again

    def codes_to_z(self, codes: Tensor) -> Tensor:
        return self.proj_out(F.normalize(self.codebook, dim=-1)[codes])


class LookupFreeQuantizer(nn.Module):
    """LFQ (MAGViT-v2): each of `bits` dimensions is quantised to its sign, so the codebook is
    the 2**bits corners of a hypercube and needs no lookup.

    Entropy loss: each vector's distribution over codes (a softmax of their similarity) should
    be confident (low per-sample entropy) while the batch as a whole should use all codes
    (high entropy of the average), weighted by `entropy_weight`; plus a commitment loss
    pulling vectors to their corners.
    """

    def __init__(self, dim: int, bits: int = 9, entropy_weight: float = 0.1, commit_weight: float = 0.25,
                 diversity: float = 1.0, inv_temperature: float = 100.0):
        super().__init__()
        self.bits = bits
        self.codebook_size = 2**bits
        self.entropy_weight = entropy_weight
        self.commit_weight = commit_weight
        self.diversity = diversity
        self.inv_temperature = inv_temperature
        self.proj_in = nn.Linear(dim, bits)
        self.proj_out = nn.Linear(bits, dim)
        self.register_buffer("powers", 2 ** torch.arange(bits), persistent=False)
        corners = ((torch.arange(self.codebook_size)[:, None] & self.powers) > 0).float() * 2 - 1
        self.register_buffer("corners", corners, persistent=False)  # [K, bits] of +-1

    def forward(self, z: Tensor) -> QuantizerOutput:
        x = self.proj_in(z)
        q = torch.where(x > 0, 1.0, -1.0)
        codes = ((q > 0).long() * self.powers).sum(-1)
        aux = self.commit_weight * F.mse_loss(x, q.detach())
        if self.training and self.entropy_weight:
            # -|x - c|^2 = 2<x, c> + const, so similarity logits are a matmul.
            probs = (2 * self.inv_temperature * x.reshape(-1, self.bits) @ self.corners.T).softmax(-1)
            per_sample = entropy(probs).mean()
            batch = entropy(probs.mean(0))
            aux = aux + self.entropy_weight * (per_sample - self.diversity * batch)
        q = x + (q - x).detach()
        return QuantizerOutput(self.proj_out(q), codes, aux)

    def codes_to_z(self, codes: Tensor) -> Tensor:
        return self.proj_out(self.corners[codes])


def build_quantizer(kind: str, dim: int, codebook_size: int, code_dim: int = 8,
                    entropy_weight: float = 0.1) -> nn.Module:
    if kind == "vq":
        return VectorQuantizer(dim, codebook_size, code_dim)
    if kind == "lfq":
        bits = codebook_size.bit_length() - 1
        if codebook_size < 2 or 2**bits != codebook_size:
            raise SmaltoError(f"LFQ needs a power-of-two codebook size, got {codebook_size}")
        return LookupFreeQuantizer(dim, bits, entropy_weight)
    raise SmaltoError(f"unknown quantizer {kind!r} (choose vq or lfq)")
