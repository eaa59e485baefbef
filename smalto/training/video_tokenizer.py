"""Train the video tokenizer on ShapesWorld clips, on top of a trained image tokenizer.

The output directory is the tokenizer directory it started from (text.json, image.*, copied
unchanged) plus:

    video.safetensors, video.json   the video tokenizer's own weights and config
    video_train.json                its training config and final metrics
    video_log.jsonl                 one line per logged step
    video_reconstructions.png       clips (odd rows, frame by frame) above their reconstructions

Metrics (`evaluate_video_tokenizer`), on clips of another seed: per-frame PSNR, codebook usage
of the latent frames' codes, and verifier agreement: the share of frames whose scene graph is
the original's, and of clips read back exactly (every frame's objects, tracked, with the motion
recovered) by `smalto.verify.motion`.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from smalto.progress import bar as progress_bar

from smalto import atomic
from smalto.data.motion import MotionConfig, MotionWorld
from smalto.data.shapes import ShapesConfig
from smalto.errors import SmaltoError
from smalto.options import SAMPLING, Range
from smalto.plots import image_grid, loss_curve, save_png
from smalto.tokenizers import Tokenizers, load_tokenizers
from smalto.tokenizers.evaluate import code_stats, psnr
from smalto.tokenizers.video import VideoTokenizer, VideoTokenizerConfig
from smalto.training.schedule import cosine_lr
from smalto.verify.motion import parse_clip
from smalto.verify.scene import parse_image


@dataclass
class VideoTrainConfig:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 50
    seed: int = 0
    log_every: int = 25
    eval_clips: int = 200
    video: VideoTokenizerConfig = field(default_factory=VideoTokenizerConfig)

    RANGES: ClassVar[dict[str, Range]] = {
        **dict.fromkeys(("steps", "batch_size", "log_every", "eval_clips"), Range(1, integer=True)),
        "lr": Range(0, low_open=True), "warmup": Range(0, integer=True), "seed": SAMPLING["seed"]}

    def __post_init__(self) -> None:
        for name, valid in self.RANGES.items():
            valid.check(getattr(self, name), name)


@dataclass
class VideoMetrics:
    clips: int
    frames: int
    psnr: float  # dB, mean over frames (the first included)
    usage: float  # % of the codebook used by the latent frames after the first
    perplexity: float
    frame_agreement: float  # % of frames whose scene graph is the original frame's
    clip_agreement: float  # % of clips read back exactly, motion included

    def table(self) -> str:
        rows = [("clips", f"{self.clips} x {self.frames} frames"), ("PSNR", f"{self.psnr:.2f} dB"),
                ("codebook usage", f"{self.usage:.1f} %"), ("code perplexity", f"{self.perplexity:.1f}"),
                ("frame agreement", f"{self.frame_agreement:.2f} %"),
                ("clip agreement", f"{self.clip_agreement:.2f} %")]
        return "\n".join(f"{k:<20}{v}" for k, v in rows)


def motion_world(tok: VideoTokenizer, seed: int, split: str = "all") -> MotionWorld:
    cfg = MotionConfig(frames=tok.cfg.frames, world=ShapesConfig(image_size=tok.image.cfg.image_size))
    return MotionWorld(cfg, seed, split)


def evaluate_video_tokenizer(tok: VideoTokenizer, world: MotionWorld, n: int, batch_size: int = 50
                             ) -> tuple[VideoMetrics, np.ndarray, np.ndarray]:
    """Metrics on clips 0..n-1 of `world`, the originals and their reconstructions."""
    tok.eval()
    originals, recons, latent = [], [], []
    for start in range(0, n, batch_size):
        clips = world.clips(start, min(batch_size, n - start))
        codes = tok.encode(clips)
        latent.append(codes[:, 1:].flatten())
        originals.append(clips)
        recons.append(tok.decode(codes)[:, :clips.shape[1]])
    clips, recon = np.concatenate(originals), np.concatenate(recons)
    t = clips.shape[1]
    usage, perplexity = code_stats(torch.cat(latent).cpu(), tok.codebook_size) if t > 1 else (0.0, 0.0)
    world_cfg = world.cfg.world
    frame_same = [parse_image(o, world_cfg) == parse_image(r, world_cfg)
                  for a, b in zip(clips, recon) for o, r in zip(a, b)]
    clip_same = [parse_clip(r, world.cfg).clip == world.clip(i) for i, r in enumerate(recon)]
    flat = (-1, *clips.shape[2:])
    metrics = VideoMetrics(n, t, float(psnr(clips.reshape(flat), recon.reshape(flat)).mean()), usage, perplexity,
                           100 * float(np.mean(frame_same)), 100 * float(np.mean(clip_same)))
    return metrics, clips, recon


def train_video_tokenizer(tok: VideoTokenizer, batches: Iterator[np.ndarray], cfg: VideoTrainConfig,
                          progress: bool = True) -> list[dict]:
    """The training loop: draw every frame after the first from the latent frames, against its pixels."""
    torch.manual_seed(cfg.seed)
    tok.train()
    params = [p for p in tok.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    log: list[dict] = []
    start = time.perf_counter()
    bar = progress_bar(range(cfg.steps), desc="video tokenizer", enabled=progress, unit="step")
    for step in bar:
        lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        clips = next(batches)
        drawn, truth, aux = tok(clips)
        mse = F.mse_loss(drawn, truth)  # frame 0 is the image tokenizer's
        loss = mse + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            psnr_db = float(10 * torch.log10(4.0 / mse.detach().clamp_min(1e-10)))  # MSE on [-1, 1] -> dB
            row = {"step": step, "loss": loss.item(), "mse": mse.item(), "aux": aux.item(), "psnr": psnr_db,
                   "lr": lr, "seconds": time.perf_counter() - start}
            log.append(row)
            bar.set_postfix(mse=f"{row['mse']:.4f}", psnr=f"{psnr_db:.1f}")
    tok.eval()
    return log


def train_video(out: str | Path, cfg: VideoTrainConfig, tokenizers: str | Path | None = None, force: bool = False,
                progress: bool = True, init_from: str | Path | None = None) -> VideoMetrics:
    """Train a video tokenizer on the image tokenizer in `tokenizers` (default: the shipped one)
    and write both, with metrics and figures, to `out`. `init_from`: a tokenizer directory whose
    video tokenizer training continues (with a new schedule; its image tokenizer and its video
    config are kept, `tokenizers` and `cfg.video` are not read)."""
    out = Path(out)
    if out.exists() and not force:
        raise SmaltoError(f"{out}: already exists (pass --force to replace it)")
    base: Tokenizers = load_tokenizers(init_from if init_from is not None else tokenizers)
    torch.manual_seed(cfg.seed)
    if init_from is not None:
        if base.video is None:
            raise SmaltoError(f"{init_from}: has no video tokenizer to continue (video.json)")
        tok = base.video
        cfg = replace(cfg, video=tok.cfg)
    else:
        tok = VideoTokenizer(base.image, cfg.video)
    train_world, eval_world = motion_world(tok, cfg.seed), motion_world(tok, cfg.seed + 1)
    batches = (train_world.clips(i, cfg.batch_size) for i in itertools.count(0, cfg.batch_size))
    started = time.perf_counter()
    log = train_video_tokenizer(tok, batches, cfg, progress)
    seconds = time.perf_counter() - started
    metrics, clips, recon = evaluate_video_tokenizer(tok, eval_world, cfg.eval_clips)
    with atomic.directory(out, overwrite=force) as tmp:
        base.copy_to(tmp)
        tok.save(tmp)
        atomic.write_text(tmp / "video_log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        summary = {"config": asdict(cfg), "train_seconds": round(seconds, 1), "metrics": asdict(metrics),
                   **({"init_from": str(init_from)} if init_from is not None else {})}
        atomic.write_text(tmp / "video_train.json", json.dumps(summary, indent=2) + "\n")
        atomic.write_bytes(tmp / "video_loss.png", loss_curve(log, ["mse", "aux"], "video tokenizer"))
        rows = list(itertools.chain.from_iterable((clips[i], recon[i]) for i in range(min(6, len(clips)))))
        save_png(tmp / "video_reconstructions.png", image_grid(rows))
    return metrics
