"""Image tokenizer metrics: PSNR, codebook usage and perplexity, and verifier agreement.

Verifier agreement is the share of images whose reconstruction parses to the same scene graph
as the original: the semantic loss a tokenizer must not have, which PSNR alone can hide (a
small triangle turned into a blob costs few pixels and the whole meaning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from smalto.data.shapes import ShapesConfig
from smalto.verify.scene import parse_image
from smalto.tokenizers.image import ImageTokenizer


@dataclass
class ImageMetrics:
    images: int
    psnr: float  # dB, mean over images
    usage: float  # % of the codebook used at least once
    perplexity: float  # exp(entropy of the code histogram); the codebook size at best
    codebook_size: int
    verifier_agreement: float | None  # % of images; None when the data has no scenes

    def table(self) -> str:
        agreement = "n/a (no scene graphs)" if self.verifier_agreement is None else f"{self.verifier_agreement:.2f} %"
        rows = [("images", f"{self.images}"), ("PSNR", f"{self.psnr:.2f} dB"),
                ("codebook usage", f"{self.usage:.1f} % of {self.codebook_size}"),
                ("code perplexity", f"{self.perplexity:.1f}"), ("verifier agreement", agreement)]
        return "\n".join(f"{k:<20}{v}" for k, v in rows)


def psnr(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB for uint8 [B, H, W, 3] arrays (capped at 100 for exact copies)."""
    mse = ((original.astype(np.float64) - reconstruction.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return np.where(mse > 0, 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10)), 100.0)


def code_stats(codes: torch.Tensor, codebook_size: int) -> tuple[float, float]:
    """(usage in %, perplexity) of a set of codes."""
    counts = torch.bincount(codes.flatten(), minlength=codebook_size).double()
    p = counts / counts.sum()
    used = float((counts > 0).sum()) / codebook_size * 100
    return used, math.exp(float(-(p[p > 0] * p[p > 0].log()).sum()))


def evaluate_image_tokenizer(tokenizer: ImageTokenizer, images: np.ndarray, check_scenes: bool = True,
                             shapes_cfg: ShapesConfig | None = None, batch_size: int = 256
                             ) -> tuple[ImageMetrics, np.ndarray]:
    """Metrics on uint8 images [N, H, W, 3], and the reconstructions."""
    tokenizer.eval()
    codes, recons = [], []
    for i in range(0, len(images), batch_size):
        c = tokenizer.encode(images[i:i + batch_size])
        codes.append(c)
        recons.append(tokenizer.decode(c))
    codes_all, recon = torch.cat(codes), np.concatenate(recons)
    usage, perplexity = code_stats(codes_all, tokenizer.codebook_size)
    agreement = None
    if check_scenes:
        cfg = shapes_cfg or ShapesConfig(image_size=images.shape[1])
        same = [parse_image(o, cfg) == parse_image(r, cfg) for o, r in zip(images, recon)]
        agreement = 100.0 * float(np.mean(same))
    metrics = ImageMetrics(len(images), float(psnr(images, recon).mean()), usage, perplexity,
                           tokenizer.codebook_size, agreement)
    return metrics, recon
