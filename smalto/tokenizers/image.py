"""The image tokenizer: conv encoder -> quantizer -> conv decoder.

    codes = tok.encode(images)   # uint8 [B, H, W, 3]  ->  int64 [B, H/f, W/f]
    images = tok.decode(codes)   # int64 [B, h, w]     ->  uint8 [B, H, W, 3]

With the defaults a 32x32 image becomes an 8x8 grid of codes: 64 tokens.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import Tensor, nn

from smalto import atomic
from smalto.errors import SmaltoError
from smalto.paths import inside
from smalto.weights import check_fits
from smalto.tokenizers.quantize import QuantizerOutput, build_quantizer


@dataclass(frozen=True)
class ImageTokenizerConfig:
    image_size: int = 32
    channels: tuple[int, ...] = (32, 64, 64)  # width at each resolution; each step halves the side
    res_blocks: int = 1
    latent_dim: int = 64
    quantizer: str = "vq"  # "vq" or "lfq"
    codebook_size: int = 512
    code_dim: int = 8  # VQ only: the normalised lookup space
    entropy_weight: float = 0.05  # LFQ only: weight of the entropy loss (at the start of training)

    def __post_init__(self) -> None:
        if not 1 <= len(self.channels) <= 8 or self.res_blocks > 16:  # bounds for a config read from a file
            raise SmaltoError(f"channels must list 1 to 8 widths and res_blocks be at most 16, got "
                              f"{len(self.channels)} and {self.res_blocks}")
        if self.image_size % self.downsample:
            raise SmaltoError(f"image_size {self.image_size} is not a multiple of the downsampling "
                              f"factor {self.downsample}")
        if self.codebook_size < 2:
            raise SmaltoError(f"codebook_size must be at least 2, got {self.codebook_size}")
        if self.quantizer not in ("vq", "lfq"):
            raise SmaltoError(f"unknown quantizer {self.quantizer!r} (choose vq or lfq)")
        if self.quantizer == "lfq" and self.codebook_size & (self.codebook_size - 1):
            raise SmaltoError(f"LFQ needs a power-of-two codebook size, got {self.codebook_size}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def grid(self) -> int:
        return self.image_size // self.downsample

    @property
    def tokens(self) -> int:
        return self.grid**2


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def _encoder(cfg: ImageTokenizerConfig) -> nn.Sequential:
    c = cfg.channels
    layers: list[nn.Module] = [nn.Conv2d(3, c[0], 3, padding=1)]
    for i, width in enumerate(c):
        layers += [ResBlock(width) for _ in range(cfg.res_blocks)]
        if i + 1 < len(c):
            layers.append(nn.Conv2d(width, c[i + 1], 4, stride=2, padding=1))
    layers += [nn.GroupNorm(8, c[-1]), nn.SiLU(), nn.Conv2d(c[-1], cfg.latent_dim, 1)]
    return nn.Sequential(*layers)


def _decoder(cfg: ImageTokenizerConfig) -> nn.Sequential:
    c = cfg.channels[::-1]
    layers: list[nn.Module] = [nn.Conv2d(cfg.latent_dim, c[0], 3, padding=1)]
    for i, width in enumerate(c):
        layers += [ResBlock(width) for _ in range(cfg.res_blocks)]
        if i + 1 < len(c):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, c[i + 1], 3, padding=1)]
    layers += [nn.GroupNorm(8, c[-1]), nn.SiLU(), nn.Conv2d(c[-1], 3, 3, padding=1)]
    return nn.Sequential(*layers)


def to_tensor(images: np.ndarray | Tensor) -> Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    x = torch.as_tensor(images)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]."""
    return x.add(1.0).mul(127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()


class ImageTokenizer(nn.Module):
    def __init__(self, cfg: ImageTokenizerConfig = ImageTokenizerConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = _encoder(cfg)
        self.quantizer = build_quantizer(cfg.quantizer, cfg.latent_dim, cfg.codebook_size, cfg.code_dim,
                                         cfg.entropy_weight)
        self.decoder = _decoder(cfg)

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def forward(self, x: Tensor) -> tuple[Tensor, QuantizerOutput]:
        """x: float [B, 3, H, W] in [-1, 1] -> (reconstruction, quantizer output)."""
        z = self.encoder(x).permute(0, 2, 3, 1)
        out = self.quantizer(z)
        return self.decoder(out.z_q.permute(0, 3, 1, 2)), out

    def _check(self, images: np.ndarray | Tensor) -> None:
        s = self.cfg.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (s, s, 3):
            raise SmaltoError(f"image tokenizer expects uint8 images [B, {s}, {s}, 3], got {tuple(images.shape)}")

    @torch.inference_mode()
    def encode(self, images: np.ndarray | Tensor) -> Tensor:
        self._check(images)
        z = self.encoder(to_tensor(images).to(self.device)).permute(0, 2, 3, 1)
        return self.quantizer(z).codes

    @torch.inference_mode()
    def decode(self, codes: Tensor) -> np.ndarray:
        z = self.quantizer.codes_to_z(codes.to(self.device)).permute(0, 3, 1, 2)
        return to_uint8(self.decoder(z))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- persistence: safetensors weights + a JSON config beside them

    def save(self, directory: str | Path, name: str = "image") -> None:
        directory = Path(directory)
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        atomic.write_bytes(directory / f"{name}.safetensors", save(state))
        atomic.write_text(directory / f"{name}.json", json.dumps(asdict(self.cfg), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path, name: str = "image") -> "ImageTokenizer":
        config, weights = (inside(directory, f"{name}.{ext}", "file") for ext in ("json", "safetensors"))
        for f in (config, weights):
            if not f.is_file():
                raise SmaltoError(f"{f}: missing (not an image tokenizer directory?)")
        try:
            raw = json.loads(config.read_text())
            raw["channels"] = tuple(raw["channels"])
            cfg = ImageTokenizerConfig(**raw)
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise SmaltoError(f"{config}: not an image tokenizer config ({e})") from None
        check_fits(weights, lambda: cls(cfg), config.name)
        model = cls(cfg)
        try:
            state = load_file(str(weights))
            model.load_state_dict(state)
        except Exception as e:  # safetensors and torch raise several types for bad files
            raise SmaltoError(f"{weights}: weights do not fit the config in {config.name} ({e})") from None
        return model.eval()


def reconstruction_loss(x: Tensor, recon: Tensor) -> Tensor:
    return F.mse_loss(recon, x)
