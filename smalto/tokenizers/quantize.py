"""Quantizers: continuous vectors -> discrete codes -> vectors again.

VQ and LFQ share one small interface, so an image tokenizer can swap them by config (`ResidualVQ`,
the audio codec's, has it too, its codes with a last axis of levels):

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


class ResidualVQ(nn.Module):
    """Residual vector quantisation (SoundStream, EnCodec, Mimi): level l quantises what levels
    0 .. l-1 left over, so the first code carries the most, each level refines it, and a prefix of
    the levels is a coarser code of the same vector.

    Codebooks live in the latent space itself and are running means of the vectors assigned to
    them (EMA k-means, EnCodec's recipe), so a quantised latent is close to the latent from the
    first step: a decoder trained on unquantised latents keeps working when quantisation starts.
    They are seeded on the first training batch (`reseed` seeds them again on the next), and a code
    out of use is restarted on a random residual. The encoder gets a commitment loss. `dropout`: while
    training, that share of batches keeps only a random prefix of the levels, so fewer levels still
    decode to a usable sound.

        out = rvq(z)            # z [..., dim] -> out.z_q [..., dim], out.codes [..., levels]
        rvq.codes_to_z(codes)   # codes [..., l] (any l <= levels) -> [..., dim]
    """

    def __init__(self, dim: int, levels: int = 4, codebook_size: int = 256, beta: float = 1.0,
                 decay: float = 0.99, dead_threshold: float = 0.1, dropout: float = 0.0):
        super().__init__()
        self.levels, self.codebook_size, self.beta, self.decay = levels, codebook_size, beta, decay
        self.dead_threshold, self.dropout = dead_threshold, dropout
        # A level's codebook is sums / counts: the running mean of the vectors each code was given.
        self.register_buffer("counts", torch.ones(levels, codebook_size))  # running uses per batch
        self.register_buffer("sums", torch.zeros(levels, codebook_size, dim))
        self.register_buffer("seeded", torch.zeros((), dtype=torch.bool))

    def forward(self, z: Tensor) -> QuantizerOutput:
        flat = z.reshape(-1, z.shape[-1])
        keep = self.levels
        if self.training:
            self._seed(flat.detach())
            if self.dropout and torch.rand(()) < self.dropout:
                keep = int(torch.randint(1, self.levels + 1, ()))
        residual, q, codes = flat.detach(), torch.zeros_like(flat), []
        for level in range(self.levels):
            idx = torch.cdist(residual, self.codebook(level)).argmin(-1)
            if self.training:
                self._update(level, residual, idx)
            chosen = self.codebook(level)[idx]
            if level < keep:
                q = q + chosen
            residual = residual - chosen
            codes.append(idx)
        aux = self.beta * F.mse_loss(flat, q)
        z_q = flat + (q - flat).detach()
        return QuantizerOutput(z_q.reshape(z.shape), torch.stack(codes, -1).reshape(*z.shape[:-1], self.levels), aux)

    def codebook(self, level: int) -> Tensor:
        return self.sums[level] / self.counts[level].clamp_min(1e-5)[:, None]

    @torch.no_grad()
    def reseed(self) -> None:
        """Seed the codebooks again on the next training batch (after an unquantised warm-up, codes
        start where the trained encoder's latents are)."""
        self.seeded.fill_(False)

    @torch.no_grad()
    def _seed(self, flat: Tensor) -> None:
        if self.seeded:
            return
        residual = flat.clone()
        for level in range(self.levels):  # each level on the residuals the levels before it leave
            picks = residual[torch.randperm(len(residual), device=flat.device)[:self.codebook_size]]
            picks = picks[torch.arange(self.codebook_size) % len(picks)]  # (a batch smaller than the codebook)
            self.sums[level] = picks
            self.counts[level] = 1.0
            residual = residual - picks[torch.cdist(residual, picks).argmin(-1)]
        self.seeded.fill_(True)

    @torch.no_grad()
    def _update(self, level: int, residual: Tensor, idx: Tensor) -> None:
        hits = torch.bincount(idx, minlength=self.codebook_size).to(residual.dtype)
        sums = torch.zeros_like(self.sums[level]).index_add_(0, idx, residual)
        self.counts[level].mul_(self.decay).add_(hits, alpha=1 - self.decay)
        self.sums[level].mul_(self.decay).add_(sums, alpha=1 - self.decay)
        dead = (self.counts[level] < self.dead_threshold).nonzero().flatten()
        if len(dead):  # onto vectors of this batch, with a grace period before they can die again
            picks = residual[torch.randint(len(residual), (len(dead),), device=residual.device)]
            self.sums[level][dead] = picks
            self.counts[level][dead] = 1.0

    def codes_to_z(self, codes: Tensor) -> Tensor:
        out = torch.zeros(*codes.shape[:-1], self.sums.shape[-1], device=codes.device)
        for level in range(codes.shape[-1]):
            out = out + self.codebook(level)[codes[..., level]]
        return out
