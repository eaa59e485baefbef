"""Train the speech recogniser (`verify.recogniser`) on espeak-ng speech (`smalto recogniser train`).

Utterances are ShapesWorld captions in the training voices (`data.speech`), synthesised once and
held as features; training is CTC over the caption words. It is measured on captions of scenes
its training never said (the "unseen" split of another seed), in the training voices and in
voices it never heard, beside the trivial baseline: every utterance transcribed as the most
frequent training caption. The output directory holds:

    recogniser.safetensors, recogniser.json   the weights and config (with its vocabulary)
    recogniser_train.json                     the training config, minutes and the metrics
    recogniser_log.jsonl                      one line per epoch
"""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from smalto import atomic
from smalto.data.speech import SpeechConfig, SpeechWorld, Utterance
from smalto.errors import SmaltoError
from smalto.options import SAMPLING, Range
from smalto.progress import bar as progress_bar
from smalto.training.schedule import cosine_lr
from smalto.verify.recogniser import Recogniser, RecogniserConfig, word_errors, words


@dataclass
class RecogniserTrainConfig:
    utterances: int = 2400  # training captions spoken (each once)
    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 50
    seed: int = 0
    eval_utterances: int = 200  # per set: unseen scenes in the training voices, and in held-out voices
    width: int = 160

    RANGES: ClassVar[dict[str, Range]] = {
        **dict.fromkeys(("utterances", "epochs", "batch_size", "eval_utterances"), Range(1, integer=True)),
        "lr": Range(0, low_open=True), "warmup": Range(0, integer=True), "seed": SAMPLING["seed"],
        "width": Range(8, 1024, integer=True)}

    def __post_init__(self) -> None:
        for name, valid in self.RANGES.items():
            valid.check(getattr(self, name), name)


def spoken(world: SpeechWorld, n: int, progress: bool = True) -> list[Utterance]:
    """Utterances 0 .. n-1 of a world; espeak-ng runs in subprocesses, four at a time."""
    with ThreadPoolExecutor(4) as pool:
        return list(progress_bar(pool.map(world.__getitem__, range(n)), total=n, desc="speaking", enabled=progress,
                                 unit="utt"))


@dataclass
class RecogniserMetrics:
    utterances: int
    word_error: float  # % on unseen scenes' captions, training voices
    exact: float  # % of those utterances transcribed word for word
    heldout_word_error: float  # the same in voices training never heard
    heldout_exact: float
    baseline_word_error: float  # every utterance transcribed as the most frequent training caption
    realtime: float  # seconds of speech transcribed per second of compute

    def table(self) -> str:
        rows = [("utterances", f"{self.utterances} per set"),
                ("word error", f"{self.word_error:.2f} % (exact {self.exact:.1f} %)"),
                ("held-out voices", f"{self.heldout_word_error:.2f} % (exact {self.heldout_exact:.1f} %)"),
                ("baseline", f"{self.baseline_word_error:.1f} % (the most frequent caption)"),
                ("real time", f"{self.realtime:.0f}x")]
        return "\n".join(f"{k:<20}{v}" for k, v in rows)


def score(model: Recogniser, said: list[Utterance]) -> tuple[float, float, float]:
    """(word error %, exact %, seconds of speech per second of compute) on utterances."""
    started = time.perf_counter()
    heard = [h for i in range(0, len(said), 50) for h in model.transcribe([u.wave for u in said[i:i + 50]])]
    seconds = time.perf_counter() - started
    errors = sum(word_errors(words(h), words(u.text)) for h, u in zip(heard, said))
    total = sum(len(words(u.text)) for u in said)
    audio = sum(len(u.wave) for u in said) / model.cfg.sample_rate
    return 100 * errors / total, 100 * float(np.mean([words(h) == words(u.text) for h, u in zip(heard, said)])), \
        audio / seconds


def train_recogniser(out: str | Path, cfg: RecogniserTrainConfig = RecogniserTrainConfig(), force: bool = False,
                     progress: bool = True) -> RecogniserMetrics:
    out = Path(out)
    if out.exists() and not force:
        raise SmaltoError(f"{out}: already exists (pass --force to replace it)")
    torch.manual_seed(cfg.seed)
    speech = SpeechConfig()
    model = Recogniser(RecogniserConfig(sample_rate=speech.sample_rate, width=cfg.width))
    index = {w: i + 1 for i, w in enumerate(model.cfg.vocabulary)}
    train = spoken(SpeechWorld(speech, cfg.seed, "train"), cfg.utterances, progress)
    feats = [model.features([u.wave])[0][0] for u in train]
    targets = [torch.tensor([index[w] for w in words(u.text)]) for u in train]
    started = time.perf_counter()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    rng = np.random.default_rng(cfg.seed)
    per_epoch = -(-len(train) // cfg.batch_size)
    steps, log, step = cfg.epochs * per_epoch, [], 0
    bar = progress_bar(range(cfg.epochs), desc="recogniser", enabled=progress, unit="epoch")
    for epoch in bar:
        model.train()
        losses = []
        for batch in np.array_split(rng.permutation(len(train)), per_epoch):
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, steps, cfg.lr, cfg.warmup)
            x = nn.utils.rnn.pad_sequence([feats[i] for i in batch], batch_first=True)
            lengths = model.steps(torch.tensor([len(feats[i]) for i in batch]))
            y = [targets[i] for i in batch]
            logp = model(x).transpose(0, 1)  # CTC wants [T, B, classes]
            loss = ctc(logp, torch.cat(y), lengths, torch.tensor([len(t) for t in y]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            step += 1
        log.append({"epoch": epoch, "ctc": float(np.mean(losses)), "seconds": round(time.perf_counter() - started, 1)})
        bar.set_postfix(ctc=f"{log[-1]['ctc']:.3f}")
    seconds = time.perf_counter() - started
    unseen = spoken(SpeechWorld(speech, cfg.seed + 1, "unseen"), cfg.eval_utterances, progress)
    voices = spoken(SpeechWorld(speech, cfg.seed + 1, "unseen", voices="heldout"), cfg.eval_utterances, progress)
    wer, exact, realtime = score(model, unseen)
    heldout_wer, heldout_exact, _ = score(model, voices)
    common = words(Counter(u.text for u in train).most_common(1)[0][0])
    baseline = 100 * sum(word_errors(common, words(u.text)) for u in unseen) / sum(len(words(u.text)) for u in unseen)
    metrics = RecogniserMetrics(cfg.eval_utterances, wer, exact, heldout_wer, heldout_exact, baseline, realtime)
    with atomic.directory(out, overwrite=force) as tmp:
        model.save(tmp)
        atomic.write_text(tmp / "recogniser_log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        summary = {"config": asdict(cfg), "train_seconds": round(seconds, 1), "metrics": asdict(metrics)}
        atomic.write_text(tmp / "recogniser_train.json", json.dumps(summary, indent=2) + "\n")
    return metrics
