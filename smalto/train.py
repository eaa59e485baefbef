"""`smalto train`: next-token prediction over the task mix, with checkpoints that resume exactly.

The run directory holds the latest checkpoint (see smalto.checkpoint) plus:

    log.jsonl      one line per logged step (loss per task, tokens/s, lr) and per evaluation
    loss.png       the loss curves
    samples.png    prompts drawn by the model at the last evaluation (one row per prompt)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from smalto import atomic, precision
from smalto.checkpoint import load_checkpoint, load_optimizer, read_meta, save_checkpoint
from smalto.data.images import MAX_PIXELS
from smalto.errors import SmaltoError
from smalto.model import PRESETS, Transformer, preset
from smalto.options import Range
from smalto.paths import inside
from smalto.plots import loss_curve
from smalto.schedule import cosine_lr
from smalto.sequence import Vocab
from smalto.stream import TASKS, ExampleStream, TaskMix
from smalto.tokenizers import load_tokenizers


COUNT = Range(1, integer=True)


@dataclass
class TrainConfig:
    preset: str = "shapes-tiny"
    data: str = "shapes"  # "shapes" or a bring-your-own folder
    tokenizers: str | None = None  # a tokenizer directory; None = the shipped default
    steps: int = 3000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    mix: TaskMix = field(default_factory=TaskMix)
    log_every: int = 10
    eval_every: int = 500  # 0 disables periodic evaluation
    save_every: int = 500
    precision: str = "auto"  # matmuls under bf16 autocast where bf16 is native ("auto"), or "bf16" / "fp32"
    max_image_pixels: int = MAX_PIXELS  # a folder's larger images are refused before decoding

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise SmaltoError(f"unknown preset {self.preset!r} (known: {', '.join(PRESETS)})")
        if self.seed < 0:
            raise SmaltoError(f"seed must be >= 0, got {self.seed}")
        positive, at_least_0 = Range(0, low_open=True), Range(0, integer=True)
        for name, valid in (("steps", COUNT), ("batch_size", COUNT), ("grad_accum", COUNT), ("log_every", COUNT),
                            ("save_every", COUNT), ("eval_every", at_least_0), ("warmup", at_least_0),
                            ("max_image_pixels", COUNT), ("lr", positive), ("weight_decay", Range(0)),
                            ("grad_clip", positive)):
            valid.check(getattr(self, name), name)
        if self.precision not in ("auto", "bf16", "fp32"):
            raise SmaltoError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if isinstance(self.mix, dict):
            self.mix = TaskMix(**self.mix)
        # Paths are stored as strings: the config goes into meta.json.
        self.data = str(self.data)
        self.tokenizers = None if self.tokenizers is None else str(self.tokenizers)


def _optimizer(model: Transformer, cfg: TrainConfig) -> torch.optim.AdamW:
    # Matrices decay; norms' gains do not.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, 0.95), fused=False)


def task_losses(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, tasks: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean cross-entropy over trained tokens, and the same per task (for the log)."""
    per_token = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
    per_token = per_token * mask
    loss = per_token.sum() / mask.sum().clamp_min(1)
    by_task = {}
    with torch.no_grad():
        for i, name in enumerate(TASKS):
            rows = tasks == i
            if rows.any():
                by_task[name] = float(per_token[rows].sum() / mask[rows].sum().clamp_min(1))
    return loss, by_task


def train(out: str | Path, cfg: TrainConfig, resume: bool = False, progress: bool = True,
          evaluate_fn=None, pause_at: int | None = None) -> list[dict]:
    """Train (or resume) a run in `out`; returns the log.

    `pause_at` stops early at that step with a checkpoint, so a long schedule can be split across
    sessions (`--resume` continues it exactly as if it had not stopped).

    `evaluate_fn(model, vocab, tokenizers) -> (metrics dict, PNG bytes)` runs every eval_every
    steps: the metrics are logged, the PNG is kept as samples.png.
    """
    out = Path(out)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log: list[dict] = []
    if resume:
        meta = read_meta(out)
        try:
            saved = TrainConfig(**meta["train"])
        except (KeyError, TypeError) as e:
            raise SmaltoError(f"{out / 'meta.json'}: no training config to resume from ({e})") from None
        if asdict(saved) != asdict(cfg) | {"steps": saved.steps}:
            raise SmaltoError(f"{out}: was trained with a different config; resume with the same flags "
                              f"(only --steps may change)")
        model, vocab, tokenizers, meta = load_checkpoint(out)
        start = meta["step"]
        log = [json.loads(line) for line in inside(out, "log.jsonl", "file").read_text().splitlines() if line]
        log = [r for r in log if r["step"] < start]
    else:
        atomic.recover(out)  # a save killed half-way must not look like an empty run directory
        if out.exists() and any(out.iterdir()):
            raise SmaltoError(f"{out}: already exists; pass --resume to continue it or choose another --out")
        tokenizers = load_tokenizers(cfg.tokenizers)
        vocab = Vocab.from_tokenizers(tokenizers)
        torch.manual_seed(cfg.seed)
        model = Transformer(preset(cfg.preset, vocab.size))
        start = 0
    model.to(device).train()
    opt = _optimizer(model, cfg)
    if resume:
        load_optimizer(out, opt)
    stream = ExampleStream(tokenizers, vocab, cfg.data, cfg.mix, cfg.seed, max_len=model.cfg.max_seq_len,
                           max_pixels=cfg.max_image_pixels)
    # Weights and optimizer state stay float32; matmuls run in bf16 where the hardware has it.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=precision.resolve(cfg.precision, device) == torch.bfloat16)

    # Written with every checkpoint (the directory is replaced whole); a resumed run keeps its gallery.
    files: dict[str, bytes] = {}
    if resume and (samples := inside(out, "samples.png", "file")).is_file():
        files["samples.png"] = samples.read_bytes()

    def checkpoint(step: int) -> None:
        files["log.jsonl"] = "".join(json.dumps(r) + "\n" for r in log).encode()
        files["loss.png"] = loss_curve([r for r in log if "loss" in r], ["loss", *TASKS], "training loss")
        save_checkpoint(out, model, vocab, tokenizers, opt, files=files,
                        extra={"step": step, "train": asdict(cfg),
                               "data_position": step * cfg.batch_size * cfg.grad_accum})

    bar = tqdm(range(start, cfg.steps), desc="train", initial=start, total=cfg.steps,
               disable=None if progress else True, unit="step")
    tick, tokens = time.perf_counter(), 0
    for step in bar:
        lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        totals: dict[str, list[float]] = {}
        loss_sum = 0.0
        for micro in range(cfg.grad_accum):
            position = (step * cfg.grad_accum + micro) * cfg.batch_size
            batch = stream.batch(position, cfg.batch_size, model.cfg.max_seq_len)
            with autocast:
                logits = model(batch.ids.to(device))
            loss, by_task = task_losses(logits, batch.targets.to(device), batch.mask.to(device),
                                        batch.tasks.to(device))
            (loss / cfg.grad_accum).backward()
            loss_sum += loss.item() / cfg.grad_accum
            tokens += batch.ids.numel()
            for k, v in by_task.items():
                totals.setdefault(k, []).append(v)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

        done = step + 1
        if step % cfg.log_every == 0 or done == cfg.steps:
            elapsed = time.perf_counter() - tick
            row = {"step": step, "loss": loss_sum, **{k: float(np.mean(v)) for k, v in totals.items()},
                   "lr": lr, "tokens_per_s": tokens / max(elapsed, 1e-9)}
            log.append(row)
            tick, tokens = time.perf_counter(), 0
            bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
        if evaluate_fn is not None and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
            model.eval()
            metrics, gallery = evaluate_fn(model, vocab, tokenizers)
            log.append({"step": step, "eval": metrics})
            files["samples.png"] = gallery
            model.train()
        if done % cfg.save_every == 0 or done == cfg.steps or done == pause_at:
            checkpoint(done)
        if done == pause_at:
            break
    model.eval()
    return log
