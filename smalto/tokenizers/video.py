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
image quantizer turns it into codes. The decoder unfolds latent frames back into per-frame
*image codes* (a classifier over the codebook at every cell of every frame), which the image
decoder draws. Training is then cheap (8x8 latents, a cross-entropy) and exact where it
matters: frames come out as sharp as the image tokenizer makes them, and the image tokenizer's
own metrics cannot move. A last group with fewer than 4 frames is padded by repeating its last
frame (`decode` returns 1 + 4G frames; callers keep the first T).
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
from smalto.tokenizers.image import ImageTokenizer, to_tensor, to_uint8
from smalto.weights import check_fits

MAX_FRAMES = 64


@dataclass(frozen=True)
class VideoTokenizerConfig:
    frames: int = 7  # the clip length it was trained on (any length encodes)
    temporal: int = 4  # frames folded into each latent frame after the first
    width: int = 64  # channels of the 3-D layers
    blocks: int = 2  # causal residual blocks on each side

    def __post_init__(self) -> None:
        for name in ("frames", "temporal", "width", "blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
                raise SmaltoError(f"video tokenizer: {name} must be an integer from 1 to 1024, got {value!r}")
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


class CausalBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.block = nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), CausalConv3d(width, width),
                                   nn.GroupNorm(8, width), nn.SiLU(), CausalConv3d(width, width))

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
        self.decode_in = CausalConv3d(d, w, kt=2)  # a latent frame and the one before it
        self.unfold = nn.Conv3d(w, w * k, 1)  # one latent frame -> k frames' features
        self.first = nn.Conv3d(d, w, 1)  # the first frame's features, from its image codes
        self.decode_blocks = nn.Sequential(*(CausalBlock(w) for _ in range(cfg.blocks)))
        self.head = nn.Sequential(nn.GroupNorm(8, w), nn.SiLU(), nn.Conv3d(w, image.codebook_size, 1))

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

    def code_logits(self, codes: Tensor) -> Tensor:
        """Codes [B, 1 + G, h, w] -> logits over image codes [B, K, 1 + G * temporal, h, w] for every frame."""
        q = self.image.quantizer.codes_to_z(codes).permute(0, 4, 1, 2, 3)  # [B, D, 1 + G, h, w]
        return self._logits(q)

    def _logits(self, q: Tensor) -> Tensor:
        h = self.unfold(F.silu(self.decode_in(q)))[:, :, 1:]  # [B, W k, G, h, w]
        b, wk, g, hh, ww = h.shape
        k = self.cfg.temporal
        h = h.reshape(b, wk // k, k, g, hh, ww).transpose(2, 3).reshape(b, wk // k, g * k, hh, ww)
        h = torch.cat([self.first(q[:, :, :1]), h], dim=2)
        return self.head(self.decode_blocks(h))

    def forward(self, frames: np.ndarray | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training: uint8 clips -> (logits [B, K, T', h, w], per-frame image codes [B, T, h, w], aux loss)."""
        z, image_codes = self.frame_latents(frames)
        out = self.quantize(self.encode_latents(z))
        first = self.image.quantizer.codes_to_z(image_codes[:, :1])  # frame 0 as its codes say
        q = torch.cat([first, out.z_q], dim=1).permute(0, 4, 1, 2, 3)
        return self._logits(q), image_codes, out.aux_loss

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
    def frame_codes(self, codes: Tensor) -> Tensor:
        """Codes [B, 1 + G, h, w] -> each frame's image codes [B, 1 + G * temporal, h, w]."""
        codes = codes.to(self.device)
        if codes.shape[1] == 1:
            return codes
        per_frame = self.code_logits(codes).argmax(1)
        return torch.cat([codes[:, :1], per_frame[:, 1:]], dim=1)  # the first frame is its own codes

    @torch.inference_mode()
    def decode(self, codes: Tensor) -> np.ndarray:
        """Codes [B, 1 + G, h, w] -> uint8 frames [B, 1 + G * temporal, H, W, 3]."""
        per_frame = self.frame_codes(codes)
        b, t = per_frame.shape[:2]
        z = self.image.quantizer.codes_to_z(per_frame.reshape(b * t, *per_frame.shape[2:])).permute(0, 3, 1, 2)
        images = to_uint8(self.image.decoder(z))
        return images.reshape(b, t, *images.shape[1:])

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
