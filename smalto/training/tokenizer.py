"""Train both tokenizers (text BPE + image) on ShapesWorld or a bring-your-own folder.

The output directory holds everything needed to tokenize, plus evidence of how it went:

    text.json              byte-level BPE (HF tokenizers format)
    image.safetensors      image tokenizer weights
    image.json             its config
    train.json             the training config and final metrics
    train_log.jsonl        one line per logged step
    loss.png               loss curves
    reconstructions.png    originals (odd rows) above their reconstructions (even rows)

It is written atomically: a crash leaves no directory that looks complete.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable, Iterator

import numpy as np
import torch
from smalto.progress import bar as progress_bar

from smalto import atomic
from smalto.data.folder import Folder, load_folder
from smalto.data.gate import MAX_PIXELS
from smalto.data.shapes import ShapesConfig, ShapesWorld
from smalto.errors import SmaltoError
from smalto.options import SAMPLING, Range
from smalto.plots import image_grid, loss_curve, save_png
from smalto.training.schedule import cosine_lr
from smalto.tokenizers.evaluate import ImageMetrics, evaluate_image_tokenizer
from smalto.tokenizers.image import ImageTokenizer, ImageTokenizerConfig, reconstruction_loss, to_tensor
from smalto.tokenizers.quantize import LookupFreeQuantizer
from smalto.tokenizers.text import TextTokenizer


@dataclass
class TokenizerTrainConfig:
    data: str = "shapes"  # "shapes" or a folder path
    steps: int = 4000
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 100
    seed: int = 0
    log_every: int = 25
    eval_images: int = 1000
    text_vocab_size: int = 512
    text_scenes: int = 5000  # ShapesWorld scenes whose captions and questions train the BPE
    # The image tokenizer is the model's eyes, so it sees every composition: the held-out split
    # restricts what the transformer learns, and must not be confounded by a tokenizer that
    # cannot draw a red triangle (trained on "train" only, it turns some of them yellow).
    shapes_split: str = "all"
    # LFQ: the entropy weight decays (cosine) to this fraction of its initial value. A strong
    # pull spreads codes early; kept strong, it fights reconstruction (see docs/benchmarks.md).
    entropy_anneal: float = 0.2
    image: ImageTokenizerConfig = field(default_factory=ImageTokenizerConfig)
    max_image_pixels: int = MAX_PIXELS  # a folder's larger images are refused before decoding

    # Valid values, read by __post_init__ and by the command line's flags.
    RANGES: ClassVar[dict[str, Range]] = {
        **dict.fromkeys(("steps", "batch_size", "log_every", "eval_images", "text_vocab_size", "text_scenes",
                         "max_image_pixels"), Range(1, integer=True)),
        "lr": Range(0, low_open=True), "warmup": Range(0, integer=True), "seed": SAMPLING["seed"],
        "entropy_anneal": Range(0, 1)}

    def __post_init__(self) -> None:
        for name, valid in self.RANGES.items():
            valid.check(getattr(self, name), name)
        if self.shapes_split not in ShapesWorld.SPLITS:
            raise SmaltoError(f"shapes_split must be one of {', '.join(ShapesWorld.SPLITS)}, got {self.shapes_split!r}")


class ImageData:
    """Training batches and a fixed evaluation set, from ShapesWorld or a folder."""

    def __init__(self, data: str, image_size: int, eval_images: int, seed: int, progress: bool = False,
                 shapes_split: str = "all", holdout: bool = True, eval_split: str = "all",
                 max_pixels: int | None = MAX_PIXELS):
        self.folder: Folder | None = None
        self.shapes_cfg = ShapesConfig(image_size=image_size)
        if data == "shapes":
            # Evaluation scenes come from another seed: never the ones trained on.
            self.world = ShapesWorld(self.shapes_cfg, seed, shapes_split)
            self.eval = ShapesWorld(self.shapes_cfg, seed + 1, eval_split).images(0, eval_images)
            self.has_scenes = True
        else:
            self.folder = load_folder(data, image_size, progress=progress, max_pixels=max_pixels)
            images = self.folder.images
            rng = np.random.default_rng(seed)
            order = rng.permutation(len(images))
            # When training, hold out 10% for evaluation if there is enough data to spare it;
            # when only evaluating, every image (up to eval_images) counts.
            spare = holdout and len(images) >= 50
            n_eval = min(eval_images, len(images) // 10 if spare else len(images))
            self.eval = images[order[:n_eval]]
            self.train = images[order[n_eval:]] if spare else images
            self.has_scenes = all(r.scene is not None for r in self.folder.records)

    def batches(self, batch_size: int, seed: int) -> Iterator[np.ndarray]:
        if self.folder is None:
            for start in itertools.count(0, batch_size):
                yield self.world.images(start, batch_size)
        rng = np.random.default_rng(seed)
        while True:
            yield self.train[rng.integers(0, len(self.train), batch_size)]

    def texts(self, scenes: int, extra_files: Iterable[Path]) -> Iterator[str]:
        if self.folder is None:
            # Text only ever comes from the train split: held-out pairs are never named.
            world = ShapesWorld(self.shapes_cfg, self.world.seed, "train")
            for i in range(scenes):
                s = world[i]
                yield from s.captions
                for pair in s.qa:
                    yield pair["q"]
                    yield pair["a"]
        else:
            yield from self.folder.texts()
        for path in extra_files:
            try:
                yield from Path(path).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise SmaltoError(f"{path}: cannot read text file ({e})") from None


def train_image_tokenizer(tokenizer: ImageTokenizer, batches: Iterator[np.ndarray], cfg: TokenizerTrainConfig,
                          progress: bool = True) -> list[dict]:
    """The training loop; returns the log (one dict per `log_every` steps)."""
    torch.manual_seed(cfg.seed)
    tokenizer.train()
    opt = torch.optim.AdamW(tokenizer.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    log: list[dict] = []
    start = time.perf_counter()
    bar = progress_bar(range(cfg.steps), desc="image tokenizer", enabled=progress, unit="step")
    for step in bar:
        lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        if isinstance(tokenizer.quantizer, LookupFreeQuantizer):
            tokenizer.quantizer.entropy_weight = cosine_lr(step, cfg.steps, cfg.image.entropy_weight, 0,
                                                           cfg.entropy_anneal)
        x = to_tensor(next(batches))
        recon, out = tokenizer(x)
        rec = reconstruction_loss(x, recon)
        loss = rec + out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tokenizer.parameters(), 1.0)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            # MSE on [-1, 1] pixels -> PSNR on [0, 255]: 10 log10(4 / mse).
            psnr = float(10 * torch.log10(4.0 / rec.detach().clamp_min(1e-10)))
            row = {"step": step, "loss": loss.item(), "recon": rec.item(), "aux": out.aux_loss.item(),
                   "psnr": psnr, "lr": lr, "seconds": time.perf_counter() - start}
            if hasattr(tokenizer.quantizer, "restarted"):
                row["restarted"] = tokenizer.quantizer.restarted
            log.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{psnr:.1f}")
    tokenizer.eval()
    return log


def train_tokenizers(out: str | Path, cfg: TokenizerTrainConfig, text_files: Iterable[Path] = (),
                     force: bool = False, progress: bool = True) -> ImageMetrics:
    """Train text + image tokenizers and write them, with metrics and figures, to `out`."""
    out = Path(out)
    if out.exists() and not force:
        raise SmaltoError(f"{out}: already exists (pass --force to replace it)")
    data = ImageData(cfg.data, cfg.image.image_size, cfg.eval_images, cfg.seed, progress, cfg.shapes_split,
                     max_pixels=cfg.max_image_pixels)
    text = TextTokenizer.train(data.texts(cfg.text_scenes, text_files), cfg.text_vocab_size)

    torch.manual_seed(cfg.seed)
    tokenizer = ImageTokenizer(cfg.image)
    started = time.perf_counter()
    log = train_image_tokenizer(tokenizer, data.batches(cfg.batch_size, cfg.seed), cfg, progress)
    train_seconds = time.perf_counter() - started
    metrics, recon = evaluate_image_tokenizer(tokenizer, data.eval, data.has_scenes, data.shapes_cfg)

    with atomic.directory(out, overwrite=force) as tmp:
        text.save(tmp / "text.json")
        tokenizer.save(tmp)
        atomic.write_text(tmp / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        summary = {"config": asdict(cfg), "train_seconds": round(train_seconds, 1),
                   "text_vocab_size": text.vocab_size, "metrics": asdict(metrics)}
        atomic.write_text(tmp / "train.json", json.dumps(summary, indent=2) + "\n")
        curve = loss_curve(log, ["recon", "aux"], f"image tokenizer ({cfg.image.quantizer})")
        atomic.write_bytes(tmp / "loss.png", curve)
        n = min(32, len(recon))
        rows = []
        for i in range(0, n, 8):
            rows += [data.eval[i:i + 8], recon[i:i + 8]]
        save_png(tmp / "reconstructions.png", image_grid(rows))
    return metrics
