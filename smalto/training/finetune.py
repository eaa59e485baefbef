"""`smalto finetune`: adapt a trained model to a new task four ways.

    full    every weight trains, from the checkpoint (a new model directory)
    lora    low-rank adapters on the blocks' linear layers, base frozen (an adapter directory)
    prompt  learned embeddings before every sequence, base frozen (an adapter directory)
    probe   nothing of the model trains: a linear classifier on its pooled hidden states, for a
            labelled folder or ShapesWorld's "which shape is at the center?" (a probe directory)

The first three are `smalto train` from the base (`init_from`), on the base's task mix, with
AdamW at the method's learning rate; see docs/post-training.md for what each costs and forgets.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar

from smalto.adapters import AdapterConfig, fingerprint
from smalto.checkpoint import load_checkpoint, read_meta
from smalto.data.shapes import world_config
from smalto.data.sounds import audible
from smalto.data.tasks import SOUND_TASKS
from smalto.errors import SmaltoError
from smalto.options import SAMPLING, Range
from smalto.training.data import TaskMix
from smalto.training.trainer import TrainConfig, train

METHODS = ("full", "lora", "prompt", "probe")
# Learning rates that worked for each method (docs/post-training.md): fewer trained weights take
# larger steps.
LR = {"full": 3e-4, "lora": 2e-3, "prompt": 3e-2, "probe": 0.05}


@dataclass
class FinetuneConfig:
    base: str | None = None  # the model to adapt (None: the shipped one)
    method: str = "lora"
    data: str = "shapes-plus"  # a ShapesWorld name or a folder
    steps: int = 300
    batch_size: int = 32
    lr: float | None = None  # None: the method's (LR)
    warmup: int = 20
    rank: int = 8  # lora
    alpha: float = 16.0  # lora
    tokens: int = 8  # prompt
    examples: int = 2000  # probe: labelled images (a fifth held out to measure accuracy)
    seed: int = 0
    eval_every: int = 0
    save_every: int = 100

    RANGES: ClassVar[dict[str, Range]] = {
        "steps": Range(1, integer=True), "batch_size": Range(1, integer=True), "lr": Range(0, low_open=True),
        "warmup": Range(0, integer=True), "examples": Range(10, integer=True), "seed": SAMPLING["seed"],
        "eval_every": Range(0, integer=True), "save_every": Range(1, integer=True)}

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SmaltoError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name, valid in self.RANGES.items():
            if getattr(self, name) is not None:
                valid.check(getattr(self, name), name)

    def train_config(self) -> TrainConfig:
        """What `smalto train` runs for full, lora and prompt: the base's own task mix (without its
        sound tasks on data that has no sound: a folder, or a world with a colour or shape that has
        no pitch or timbre, as shapes-plus's orange and star)."""
        from smalto.pipeline import DEFAULT_MODEL

        base = str(self.base or DEFAULT_MODEL)
        saved = read_meta(base).get("train", {})
        mix = TaskMix(**saved["mix"]) if isinstance(saved.get("mix"), dict) else TaskMix()
        if mix.sounds and not audible(world_config(self.data)):
            mix = replace(mix, **{task: 0.0 for task in SOUND_TASKS})
        adapter = None if self.method == "full" else \
            AdapterConfig(self.method, self.rank, self.alpha, tokens=self.tokens)
        return TrainConfig(init_from=base, data=self.data, steps=self.steps, batch_size=self.batch_size,
                           lr=self.lr or LR[self.method], warmup=self.warmup, weight_decay=0.0, optimizer="adamw",
                           seed=self.seed, mix=mix, eval_every=self.eval_every, save_every=self.save_every,
                           adapter=adapter, compile=False)


def finetune(out: str | Path, cfg: FinetuneConfig, resume: bool = False, progress: bool = True) -> dict:
    """Adapt cfg.base to cfg.data by cfg.method into `out`; returns what it cost (and, for a probe,
    its accuracy against the pixel baseline)."""
    if cfg.method == "probe":
        return run_probe(out, cfg)
    tcfg = cfg.train_config()
    start = time.perf_counter()
    log = train(out, tcfg, resume=resume, progress=progress)
    sizes = next(r for r in log if "trainable" in r)
    last = [r for r in log if "loss" in r][-1]
    return {"method": cfg.method, "trainable": sizes["trainable"], "params": sizes["params"], "loss": last["loss"],
            "minutes": round((time.perf_counter() - start) / 60, 2)}


def run_probe(out: str | Path, cfg: FinetuneConfig) -> dict:
    """Fit a probe on the base's hidden states and the pixel baseline on the same images; keep the
    former in `out` (probe.json, probe.safetensors)."""
    from smalto.pipeline import DEFAULT_MODEL
    from smalto.training.probe import accuracy, fit_probe, hidden_features, pixel_features, probe_data

    start = time.perf_counter()
    model, vocab, tokenizers, _ = load_checkpoint(cfg.base or DEFAULT_MODEL, "tokens",
                                                  "the probe pools the hidden states of a picture's codes")
    images, labels = probe_data(cfg.data, tokenizers.image.cfg.image_size, cfg.examples, cfg.seed)
    cut = len(images) * 4 // 5
    hidden = hidden_features(model, vocab, tokenizers.image.encode(images))
    pixels = pixel_features(images)
    lr = cfg.lr or LR["probe"]
    probe = fit_probe(hidden[:cut], labels[:cut], "hidden", cfg.steps, lr, seed=cfg.seed)
    baseline = fit_probe(pixels[:cut], labels[:cut], "pixels", cfg.steps, lr, seed=cfg.seed)
    report = {"method": "probe", "classes": probe.classes, "train": cut, "test": len(images) - cut,
              "accuracy": round(100 * accuracy(probe, hidden[cut:], labels[cut:]), 1),
              "pixel_baseline": round(100 * accuracy(baseline, pixels[cut:], labels[cut:]), 1),
              "trainable": probe.parameters, "params": probe.parameters + sum(p.numel() for p in model.parameters()),
              "minutes": round((time.perf_counter() - start) / 60, 2)}
    probe.save(out, {"base": {"path": str(cfg.base or DEFAULT_MODEL), "fingerprint": fingerprint(model)},
                     "finetune": asdict(cfg), "report": report})
    return report
