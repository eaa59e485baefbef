"""The speech recogniser: spoken ShapesWorld words -> text, a small model trained apart from smalto's.

It is the judge of speech, as `verify.scene` is of pictures: when the model speaks a caption, this
says what was said, and since it is trained here on espeak-ng speech only (`smalto recogniser
train`), its own word error is measured and reported beside every figure it judges. It knows the
words of ShapesWorld's captions and nothing else (a closed vocabulary: any other word is heard as
one of these, or not at all).

Log-mel frames (10 ms) -> two strided 1-D convolutions (40 ms a step) -> residual dilated
convolutions seeing 2.4 s either side -> a word or blank per step, trained with CTC; greedy
decoding collapses repeats and drops blanks. (Convolutions, not a GRU: on two CPU cores a
bidirectional GRU trained ten times slower, its 112 steps an utterance run one after another.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from smalto.assets import DEFAULT_RECOGNISER
from smalto.data.shapes import NUMBER_WORDS, POSITIONS, ShapesConfig
from smalto.verify.hearing import log_mel
from smalto.weights import load_module, save_module


def caption_words(world: ShapesConfig | None = None) -> tuple[str, ...]:
    """Every word a ShapesWorld caption can say, in a fixed order."""
    world = world or ShapesConfig()
    template = ("a", "and", "at", "the", "in", "there", "is", "single", "which", "of", "object", "objects",
                "above", "below", "left", "right", *NUMBER_WORDS)
    words = [*template, *world.size_names, *world.colors, *world.shapes,
             *(w for row in POSITIONS for name in row for w in name.split())]
    return tuple(dict.fromkeys(words))


def words(text: str) -> list[str]:
    """A text as the recogniser hears it: lower case, punctuation dropped."""
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()


def word_errors(said: list[str], truth: list[str]) -> int:
    """Substitutions + deletions + insertions turning `truth` into `said` (Levenshtein on words)."""
    row = list(range(len(truth) + 1))
    for i, w in enumerate(said, 1):
        prev, row[0] = row[0], i
        for j, t in enumerate(truth, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (w != t))
    return row[-1]


@dataclass(frozen=True)
class RecogniserConfig:
    sample_rate: int = 16000
    n_mels: int = 64
    width: int = 160
    layers: int = 2  # rounds of four dilated convolutions (dilations 1, 2, 4, 8)
    vocabulary: tuple[str, ...] = field(default_factory=caption_words)

    @property
    def hop(self) -> int:
        return self.sample_rate // 100  # 10 ms frames


class Recogniser(nn.Module):
    def __init__(self, cfg: RecogniserConfig = RecogniserConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.conv = nn.Sequential(nn.Conv1d(cfg.n_mels, w, 5, stride=2, padding=2), nn.GELU(),
                                  nn.Conv1d(w, w, 5, stride=2, padding=2), nn.GELU())
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv1d(w, w, 5, dilation=d, padding=2 * d), nn.GELU())
                                    for _ in range(cfg.layers) for d in (1, 2, 4, 8))
        self.head = nn.Linear(w, len(cfg.vocabulary) + 1)  # 0 is CTC's blank

    def features(self, waves: list[np.ndarray]) -> tuple[Tensor, Tensor]:
        """Padded, per-utterance normalised log-mel frames [B, T, n_mels] and each one's length."""
        mels = [log_mel(w, self.cfg.sample_rate, n_fft=400, hop=self.cfg.hop, n_mels=self.cfg.n_mels).T for w in waves]
        mels = [(m - m.mean(0)) / (m.std(0) + 1e-5) for m in mels]
        lengths = torch.tensor([len(m) for m in mels])
        return nn.utils.rnn.pad_sequence(mels, batch_first=True), lengths

    def steps(self, lengths: Tensor) -> Tensor:
        """How many output steps frames of these lengths give (two strides of 2)."""
        for _ in range(2):
            lengths = (lengths - 1) // 2 + 1
        return lengths

    def forward(self, feats: Tensor) -> Tensor:
        """[B, T, n_mels] -> log-probabilities [B, T', words + 1]."""
        x = self.conv(feats.transpose(1, 2))
        for block in self.blocks:
            x = x + block(x)
        return self.head(x.transpose(1, 2)).log_softmax(-1)

    @torch.no_grad()
    def transcribe(self, waves: list[np.ndarray]) -> list[str]:
        self.eval()
        feats, lengths = self.features(waves)
        best = self(feats).argmax(-1)
        out = []
        for row, n in zip(best, self.steps(lengths)):
            ids = row[:n].tolist()
            kept = [i for k, i in enumerate(ids) if i and (k == 0 or i != ids[k - 1])]
            out.append(" ".join(self.cfg.vocabulary[i - 1] for i in kept))
        return out

    def save(self, directory: str | Path) -> None:
        save_module(self, self.cfg, directory, "recogniser")

    @classmethod
    def load(cls, directory: str | Path | None = None) -> Recogniser:
        """A directory written by `smalto recogniser train`; None loads the shipped one."""
        def config(raw: dict) -> RecogniserConfig:
            return RecogniserConfig(**{**raw, "vocabulary": tuple(raw.get("vocabulary", caption_words()))})

        return load_module(DEFAULT_RECOGNISER if directory is None else directory, "recogniser",
                           "a speech recogniser", config, cls)
