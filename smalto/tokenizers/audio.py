"""The audio codec: waveform -> residual codes per frame -> waveform, causal end to end.

A small member of the SoundStream / EnCodec / Mimi family, trained here (`smalto tokenizer
train-audio`). The encoder is a causal 1-D convolution net that downsamples by `prod(strides)`
(400 at 16 kHz: 40 frames a second); each frame's latent is quantised by residual VQ into `levels`
codes; the decoder mirrors the encoder with causal transposed convolutions.

Causal means a frame's codes depend only on samples up to its end, and a decoded sample only on
frames up to its own: a sound can be encoded while it is heard and decoded while it is spoken,
the way a model streams it. (How the levels are laid out in a token stream is the format's
choice, not the codec's.)

    codec.encode(wave)   # float [B, samples] (or [samples]) -> int64 codes [B, levels, frames]
    codec.decode(codes)  # -> float32 numpy [B, frames * hop]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smalto.errors import SmaltoError
from smalto.options import Range
from smalto.tokenizers.quantize import ResidualVQ
from smalto.weights import load_module, save_module


@dataclass(frozen=True)
class AudioCodecConfig:
    sample_rate: int = 16000
    strides: tuple[int, ...] = (4, 5, 5, 4)  # samples per frame: their product (400: 40 frames a second)
    width: int = 16  # channels after the first convolution; doubled at each downsampling
    latent_dim: int = 64
    levels: int = 4  # residual codes per frame
    codebook_size: int = 256  # per level
    dropout: float = 0.5  # share of training batches quantised with a random prefix of the levels

    RANGES: ClassVar[dict[str, Range]] = {
        "sample_rate": Range(8000, 48000, integer=True), "width": Range(4, 256, integer=True),
        "latent_dim": Range(4, 1024, integer=True), "levels": Range(1, 32, integer=True),
        "codebook_size": Range(2, 65536, integer=True), "dropout": Range(0, 1)}

    def __post_init__(self) -> None:
        for name, valid in self.RANGES.items():
            valid.check(getattr(self, name), name)
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        if not self.strides or min(self.strides) < 1:
            raise SmaltoError(f"strides: need one or more positive integers, got {self.strides}")

    @property
    def hop(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    @property
    def tokens_per_second(self) -> float:
        return self.frame_rate * self.levels


class CausalConv(nn.Conv1d):
    """A Conv1d padded on the left only, so output t sees inputs up to t * stride + stride - 1."""

    def forward(self, x: Tensor) -> Tensor:
        pad = (self.kernel_size[0] - 1) * self.dilation[0] - (self.stride[0] - 1)
        return super().forward(F.pad(x, (pad, 0)))


class CausalUpsample(nn.ConvTranspose1d):
    """A transposed convolution with the overhang trimmed on the right: output sample n depends on
    input frames up to n // stride."""

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        return y[..., :x.shape[-1] * self.stride[0]]


class ResidualUnit(nn.Sequential):
    def __init__(self, channels: int, dilation: int):
        super().__init__(nn.ELU(), CausalConv(channels, channels, 7, dilation=dilation), nn.ELU(),
                         nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + super().forward(x)


def _widths(cfg: AudioCodecConfig) -> list[int]:
    return [cfg.width * 2 ** i for i in range(len(cfg.strides) + 1)]


class AudioCodec(nn.Module):
    def __init__(self, cfg: AudioCodecConfig = AudioCodecConfig()):
        super().__init__()
        self.cfg = cfg
        w = _widths(cfg)
        enc: list[nn.Module] = [CausalConv(1, w[0], 7)]
        for i, s in enumerate(cfg.strides):
            enc += [ResidualUnit(w[i], 1), ResidualUnit(w[i], 3), nn.ELU(), CausalConv(w[i], w[i + 1], 2 * s, stride=s)]
        enc += [nn.ELU(), CausalConv(w[-1], cfg.latent_dim, 3)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = ResidualVQ(cfg.latent_dim, cfg.levels, cfg.codebook_size, dropout=cfg.dropout)
        dec: list[nn.Module] = [CausalConv(cfg.latent_dim, w[-1], 7)]
        for i, s in reversed(list(enumerate(cfg.strides))):
            dec += [nn.ELU(), CausalUpsample(w[i + 1], w[i], 2 * s, stride=s), ResidualUnit(w[i], 1),
                    ResidualUnit(w[i], 3)]
        dec += [nn.ELU(), CausalConv(w[0], 1, 7)]
        self.decoder = nn.Sequential(*dec)
        self._init()

    def _init(self) -> None:
        # Torch's default initialisation shrinks a signal by about sqrt(3) per layer: through the twenty
        # layers from waveform to waveform the output starts near zero and the gradients vanish before
        # the encoder (silence is then a minimum the loss never leaves). Variance-keeping weights, and
        # residual branches that start as the identity, train from the first step.
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose1d):  # an output sample sums in_channels x kernel / stride taps
                nn.init.normal_(m.weight, std=(m.in_channels * m.kernel_size[0] / m.stride[0]) ** -0.5)
            elif isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
            if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, ResidualUnit):
                nn.init.zeros_(m[-1].weight)

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _batch(self, wave) -> Tensor:
        x = torch.as_tensor(np.asarray(wave, dtype=np.float32) if not isinstance(wave, Tensor) else wave)
        x = x.to(self.device, torch.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise SmaltoError(f"audio codec: expected a wave [samples] or a batch [B, samples], got {tuple(x.shape)}")
        return F.pad(x, (0, -x.shape[-1] % self.cfg.hop))[:, None]  # whole frames: pad the end with silence

    def forward(self, wave: Tensor, quantize: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
        """(reconstruction [B, samples], codes [B, levels, frames], quantizer loss) for training;
        `quantize=False` decodes the latents themselves (no codes, no loss): the warm-up."""
        z = self.encoder(self._batch(wave))  # [B, latent, frames]
        if not quantize:
            return self.decoder(z)[:, 0], None, z.new_zeros(())
        q = self.quantizer(z.transpose(1, 2))
        return self.decoder(q.z_q.transpose(1, 2))[:, 0], q.codes.transpose(1, 2), q.aux_loss

    @torch.no_grad()
    def encode(self, wave) -> Tensor:
        z = self.encoder(self._batch(wave)).transpose(1, 2)
        return self.quantizer(z).codes.transpose(1, 2)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> np.ndarray:
        """codes [B, l, frames] (l <= levels: a prefix of the levels decodes too) -> float32 [B, frames * hop]."""
        codes = torch.as_tensor(codes, device=self.device)
        if codes.ndim != 3 or codes.shape[1] > self.cfg.levels:
            raise SmaltoError(f"audio codec: expected codes [B, <= {self.cfg.levels}, frames], "
                              f"got {tuple(codes.shape)}")
        z = self.quantizer.codes_to_z(codes.transpose(1, 2)).transpose(1, 2)
        return self.decoder(z)[:, 0].clamp(-1, 1).cpu().numpy()

    def save(self, directory: str | Path) -> None:
        save_module(self, self.cfg, directory, "audio")

    @classmethod
    def load(cls, directory: str | Path) -> AudioCodec:
        return load_module(directory, "audio", "an audio codec", lambda raw: AudioCodecConfig(**raw), cls)
