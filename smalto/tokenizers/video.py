"""The video tokenizer: a causal 3-D tokenizer that shares the image tokenizer's codebook.

    codes = tok.encode(frames)   # uint8 [B, T, H, W, 3]  ->  int64 [B, 1 + G, h, w], G = ceil((T - 1) / 4)
    frames = tok.decode(codes)   # int64 [B, 1 + G, h, w] ->  uint8 [B, 1 + 4G, H, W, 3]

As MAGViT-v2's, the first frame is encoded alone and is exactly an image: its codes are the image
tokenizer's, so a picture is a one-frame clip with the same ids and the two share one
vocabulary. Later frames are encoded in groups of `temporal` (4): one grid of codes per group,
from the same codebook. Every convolution over time is causal (padded on the past side only), so
a frame never changes the codes of a group that ends before it, nor the frames decoded before it.

It is built on the image tokenizer and leaves it untouched (frozen): frames go through the image
encoder, a causal 3-D network folds each group of 4 frame latents into one latent frame, and the
image quantizer turns it into codes. The decoder draws the frames one after another as latent
vectors, each from the frame before it and its latent frame (motion is a small displacement
from one frame to the next, which a few 3x3 convolutions can make, where drawing 4 frames at
once from one grid would need the whole image in view), and the image decoder draws their
pixels; the loss is on those pixels. (Not on the image codes of each frame: the image
tokenizer's codes depend on their neighbours, a blank image alone uses a dozen, so many code
grids draw the same frame and an exact-code target punishes right answers.) The image
tokenizer's weights are frozen, so its own metrics cannot move. A last group with fewer than 4
frames is padded by repeating its last frame (`decode` returns 1 + 4G frames; callers keep the
first T).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn

from smalto import atomic
from smalto.data.gate import MAX_FRAMES
from smalto.errors import SmaltoError
from smalto.options import Range
from smalto.paths import inside
from smalto.tokenizers.image import ImageTokenizer, ResBlock, to_tensor, to_uint8
from smalto.weights import check_fits


@dataclass(frozen=True)
class VideoTokenizerConfig:
    frames: int = 7  # the clip length it was trained on (any length encodes)
    temporal: int = 4  # frames folded into each latent frame after the first
    width: int = 64  # channels of the 3-D layers
    blocks: int = 2  # causal residual blocks on each side

    RANGES: ClassVar[dict[str, Range]] = {
        "frames": Range(1, MAX_FRAMES, integer=True), "temporal": Range(1, 16, integer=True),
        "width": Range(8, 1024, integer=True), "blocks": Range(1, 16, integer=True)}

    def __post_init__(self) -> None:
        for name, valid in self.RANGES.items():
            valid.check(getattr(self, name), f"video tokenizer: {name}")
        if self.width % 8:
            raise SmaltoError(f"video tokenizer: width must be a multiple of 8 (group norm), got {self.width}")

    def latent_frames(self, frames: int) -> int:
        """1 + G: the first frame alone, then a latent frame per group of `temporal`."""
        return 1 + -(-(frames - 1) // self.temporal)


class CausalConv3d(nn.Module):
    """A 3-D convolution that sees only the present and past in time: (kt - 1) frames of padding
    before the clip (repeating the first frame, so a clip's start looks like a still), none after."""

    def __init__(self, cin: int, cout: int, kt: int = 3, ks: int = 3):
        super().__init__()
        self.kt = kt
        self.conv = nn.Conv3d(cin, cout, (kt, ks, ks), padding=(0, ks // 2, ks // 2))

    def forward(self, x: Tensor) -> Tensor:  # [B, C, T, h, w]
        if self.kt > 1:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.kt - 1, -1, -1), x], dim=2)
        return self.conv(x)


class FrameNorm(nn.GroupNorm):
    """Group norm over each frame on its own: statistics over time would let a later frame
    change an earlier one's features."""

    def forward(self, x: Tensor) -> Tensor:  # [B, C, T, h, w]
        b, c, t, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.view(b, t, c, h, w).transpose(1, 2)


class CausalBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.block = nn.Sequential(FrameNorm(8, width), nn.SiLU(), CausalConv3d(width, width),
                                   FrameNorm(8, width), nn.SiLU(), CausalConv3d(width, width))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class VideoTokenizer(nn.Module):
    def __init__(self, image: ImageTokenizer, cfg: VideoTokenizerConfig = VideoTokenizerConfig()):
        super().__init__()
        self.cfg, self.image = cfg, image.eval().requires_grad_(False)
        d, w, k = image.cfg.latent_dim, cfg.width, cfg.temporal
        self.encode_in = CausalConv3d(d, w)
        self.encode_blocks = nn.Sequential(*(CausalBlock(w) for _ in range(cfg.blocks)))
        # a group's k frames side by side in channels -> one latent frame
        self.fold = nn.Sequential(nn.Conv3d(w * k, w, (1, 3, 3), padding=(0, 1, 1)), nn.SiLU(), nn.Conv3d(w, d, 1))
        # the decoder draws each later frame's latent vectors from the previous frame's and its latent frame
        self.unfold = nn.Conv3d(d, w * k, 1)  # one latent frame -> each of its k frames' features
        self.step_in = nn.Conv2d(d + w, w, 3, padding=1)
        self.step_blocks = nn.Sequential(*(ResBlock(w) for _ in range(cfg.blocks)))
        self.head = nn.Sequential(nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, d, 1))

    def train(self, mode: bool = True) -> "VideoTokenizer":
        super().train(mode)
        self.image.eval()  # frozen, its quantizer's running statistics included
        return self

    @property
    def codebook_size(self) -> int:
        return self.image.codebook_size

    @property
    def device(self) -> torch.device:
        return self.head[-1].weight.device

    # --- the pieces, on tensors

    def _check(self, frames: np.ndarray | Tensor) -> None:
        s = self.image.cfg.image_size
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (s, s, 3) or not 1 <= frames.shape[1] <= MAX_FRAMES:
            raise SmaltoError(f"video tokenizer expects uint8 clips [B, 1..{MAX_FRAMES}, {s}, {s}, 3], "
                              f"got {tuple(frames.shape)}")

    @torch.no_grad()
    def frame_latents(self, frames: np.ndarray | Tensor) -> tuple[Tensor, Tensor]:
        """The image encoder on every frame: latents [B, D, T, h, w] and image codes [B, T, h, w]."""
        b, t = frames.shape[:2]
        x = to_tensor(torch.as_tensor(frames).reshape(b * t, *frames.shape[2:])).to(self.device)
        z = self.image.encoder(x).permute(0, 2, 3, 1)  # [BT, h, w, D]
        codes = self.image.quantizer(z).codes
        return z.reshape(b, t, *z.shape[1:]).permute(0, 4, 1, 2, 3), codes.reshape(b, t, *codes.shape[1:])

    def _padded(self, x: Tensor) -> Tensor:
        """Frames 1.. of [B, C, T, h, w], the last repeated up to a whole number of groups."""
        rest, k = x.shape[2] - 1, self.cfg.temporal
        pad = -rest % k
        return torch.cat([x, x[:, :, -1:].expand(-1, -1, pad, -1, -1)], 2) if pad else x

    def encode_latents(self, z: Tensor) -> Tensor:
        """Frame latents [B, D, T, h, w] -> group latents [B, D, G, h, w] (before quantization)."""
        h = self.encode_blocks(self.encode_in(self._padded(z)))[:, :, 1:]  # frame 0 is context only
        b, w, t, hh, ww = h.shape
        k = self.cfg.temporal
        h = h.reshape(b, w, t // k, k, hh, ww).transpose(2, 3).reshape(b, w * k, t // k, hh, ww)
        return self.fold(h)

    def quantize(self, z: Tensor):
        """[B, D, G, h, w] -> the image quantizer's output on it (channels last)."""
        return self.image.quantizer(z.permute(0, 2, 3, 4, 1))

    def frame_features(self, latents: Tensor) -> Tensor:
        """Latent frames after the first, as vectors [B, D, G, h, w] -> per-frame features [B, W, G k, h, w]."""
        h = self.unfold(latents)
        b, wk, g, hh, ww = h.shape
        k = self.cfg.temporal
        return h.reshape(b, wk // k, k, g, hh, ww).transpose(2, 3).reshape(b, wk // k, g * k, hh, ww)

    def step(self, previous: Tensor, features: Tensor) -> Tensor:
        """One frame's latent vectors [N, D, h, w] from the previous frame's and its features [N, W, h, w]:
        the previous frame moved (a residual, zero where nothing moves)."""
        return previous + self.head(self.step_blocks(self.step_in(torch.cat([previous, features], 1))))

    def frame_vectors(self, codes: Tensor, latents: Tensor | None = None) -> Tensor:
        """Every frame's latent vectors [B, D, 1 + G k, h, w], the first from its codes, each later one
        from the one before (`latents`: the latent frames' quantized vectors [B, D, G, h, w], by default
        looked up from codes[:, 1:])."""
        q = self.image.quantizer.codes_to_z
        if latents is None:
            latents = q(codes[:, 1:]).permute(0, 4, 1, 2, 3)
        features = self.frame_features(latents)
        frames = [q(codes[:, 0]).permute(0, 3, 1, 2)]
        for t in range(features.shape[2]):
            frames.append(self.step(frames[-1], features[:, :, t]))
        return torch.stack(frames, 2)

    def draw(self, vectors: Tensor) -> Tensor:
        """Frame vectors [B, D, T, h, w] -> pixels [B, T, 3, H, W] in [-1, 1] (the image decoder's)."""
        b, d, t, h, w = vectors.shape
        x = self.image.decoder(vectors.transpose(1, 2).reshape(b * t, d, h, w))
        return x.view(b, t, *x.shape[1:])

    def forward(self, frames: np.ndarray | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training: uint8 clips [B, T, ...] -> (frames 1.. drawn [B, T - 1, 3, H, W], the same frames
        as they are [B, T - 1, 3, H, W], both in [-1, 1], and the quantizer's aux loss)."""
        z, codes = self.frame_latents(frames)
        out = self.quantize(self.encode_latents(z))
        t = codes.shape[1]
        vectors = self.frame_vectors(codes[:, :1], out.z_q.permute(0, 4, 1, 2, 3))[:, :, 1:t]
        truth = to_tensor(torch.as_tensor(frames[:, 1:]).flatten(0, 1)).view(len(frames), t - 1, 3,
                                                                             *frames.shape[2:4]).to(self.device)
        return self.draw(vectors), truth, out.aux_loss

    # --- the interface

    @torch.inference_mode()
    def encode(self, frames: np.ndarray | Tensor) -> Tensor:
        """uint8 [B, T, H, W, 3] -> codes [B, 1 + G, h, w]: the first frame's image codes, then a
        grid per group of `temporal` frames."""
        self._check(frames)
        z, image_codes = self.frame_latents(frames)
        if z.shape[2] == 1:
            return image_codes
        return torch.cat([image_codes[:, :1], self.quantize(self.encode_latents(z)).codes], dim=1)

    @torch.inference_mode()
    def decode(self, codes: Tensor) -> np.ndarray:
        """Codes [B, 1 + G, h, w] -> uint8 frames [B, 1 + G * temporal, H, W, 3]."""
        codes = codes.to(self.device)
        if codes.shape[1] == 1:
            return self.image.decode(codes[:, 0])[:, None]
        pixels = self.draw(self.frame_vectors(codes))
        b, t = pixels.shape[:2]
        return to_uint8(pixels.flatten(0, 1)).reshape(b, t, *pixels.shape[3:], 3)

    # --- persistence: its own weights (the image tokenizer's are beside them) and config

    def save(self, directory: str | Path, name: str = "video") -> None:
        directory = Path(directory)
        state = {k: v.contiguous() for k, v in self.state_dict().items() if not k.startswith("image.")}
        atomic.write_bytes(directory / f"{name}.safetensors", save(state))
        atomic.write_text(directory / f"{name}.json", json.dumps(asdict(self.cfg), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path, image: ImageTokenizer, name: str = "video") -> "VideoTokenizer":
        config, weights = (inside(directory, f"{name}.{ext}", "file") for ext in ("json", "safetensors"))
        for f in (config, weights):
            if not f.is_file():
                raise SmaltoError(f"{f}: missing (not a video tokenizer directory?)")
        try:
            cfg = VideoTokenizerConfig(**json.loads(config.read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise SmaltoError(f"{config}: not a video tokenizer config ({e})") from None
        check_fits(weights, lambda: cls(image, cfg), config.name, skip=tuple(f"image.{k}" for k in image.state_dict()))
        model = cls(image, cfg)
        try:
            missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
        except Exception as e:  # safetensors and torch raise several types for bad files
            raise SmaltoError(f"{weights}: weights do not fit the config in {config.name} ({e})") from None
        if unexpected or [k for k in missing if not k.startswith("image.")]:
            raise SmaltoError(f"{weights}: weights do not fit the config in {config.name} "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.eval()
