"""Linear probing: what a frozen model's hidden states already know, read by one linear layer.

A probe classifies images into a folder's labels (or, on ShapesWorld, "which shape is at the
center?", "nothing" when the cell is empty). Its features are the model's final hidden states
for the captioning prompt of the image, pooled: the mean over the image's codes beside the state
the caption would start from. The same classifier on raw pixels is the baseline: the gap between
the two is what the backbone's representation adds.

    probe = fit_probe(hidden_features(model, vocab, codes), labels)
    probe.predict(hidden_features(model, vocab, other_codes))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import Tensor

from smalto import atomic
from smalto.data.folder import load_folder
from smalto.data.shapes import ShapesWorld, world_config
from smalto.errors import SmaltoError
from smalto.format import Vocab, caption_prompt, positions
from smalto.model import Transformer
from smalto.paths import inside

FORMAT = "smalto-probe/1"
NOTHING = "nothing"
FEATURES = ("hidden", "pixels")


@dataclass
class Probe:
    classes: list[str]
    weight: Tensor  # [classes, features]
    bias: Tensor  # [classes]
    mean: Tensor  # [features]: features are standardised with the training set's statistics
    std: Tensor
    features: str = "hidden"  # "hidden" (the model's pooled states) or "pixels" (the baseline)

    def logits(self, x: Tensor) -> Tensor:
        return ((x - self.mean) / self.std) @ self.weight.T + self.bias

    def predict(self, x: Tensor) -> list[str]:
        return [self.classes[i] for i in self.logits(x).argmax(-1).tolist()]

    @property
    def parameters(self) -> int:
        return self.weight.numel() + self.bias.numel()

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        path = Path(path)
        with atomic.directory(path, overwrite=True) as tmp:
            tensors = {"weight": self.weight, "bias": self.bias, "mean": self.mean, "std": self.std}
            atomic.write_bytes(tmp / "probe.safetensors", save({k: v.contiguous() for k, v in tensors.items()}))
            meta = {"format": FORMAT, "classes": self.classes, "features": self.features, **(extra or {})}
            atomic.write_text(tmp / "probe.json", json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> tuple[Probe, dict]:
        path = Path(path)
        try:
            meta = json.loads(inside(path, "probe.json", "file").read_text())
            tensors = load_file(str(inside(path, "probe.safetensors", "file")))
            probe = cls(list(meta["classes"]), tensors["weight"], tensors["bias"], tensors["mean"], tensors["std"],
                        meta["features"])
        except FileNotFoundError:
            raise SmaltoError(f"{path}: not a probe directory (no probe.json / probe.safetensors)") from None
        except Exception as e:  # JSON, safetensors and key errors: a damaged directory
            raise SmaltoError(f"{path}: unreadable probe ({e})") from None
        if meta.get("format") != FORMAT or probe.weight.shape != (len(probe.classes), probe.mean.numel()):
            raise SmaltoError(f"{path}: not a {FORMAT} probe, or its weights do not fit its classes")
        return probe, meta


@torch.inference_mode()
def hidden_features(model: Transformer, vocab: Vocab, codes: Tensor, batch: int = 256) -> Tensor:
    """[N, 2 * dim]: per image, the mean final hidden state over its codes, and the state at the
    end of the captioning prompt (where the caption would begin)."""
    out = []
    device = model.embed.weight.device
    for i in range(0, len(codes), batch):
        rows = [caption_prompt(vocab, c) for c in codes[i:i + batch]]
        ids = torch.tensor(rows, device=device)
        where = torch.stack([positions(vocab, r) for r in rows]).to(device)
        h, _ = model.network(model.embed(ids), model.rotary(where), None, None, None, None, head=False)
        span = vocab.ranges[vocab.image.range]
        image = (ids >= span.start) & (ids < span.stop)
        pooled = (h * image[..., None]).sum(1) / image.sum(1, keepdim=True)
        out.append(torch.cat([pooled, h[:, -1]], -1).float().cpu())
    return torch.cat(out)


def pixel_features(images: np.ndarray) -> Tensor:
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)


def fit_probe(x: Tensor, labels: list[str], features: str = "hidden", steps: int = 500, lr: float = 0.05,
              weight_decay: float = 1e-3, seed: int = 0) -> Probe:
    """Multinomial logistic regression on standardised features (full-batch AdamW)."""
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise SmaltoError(f"a probe needs at least two labels, got {classes}")
    y = torch.tensor([classes.index(label) for label in labels])
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    torch.manual_seed(seed)
    weight = torch.zeros(len(classes), x.shape[1], requires_grad=True)
    bias = torch.zeros(len(classes), requires_grad=True)
    opt = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(z @ weight.T + bias, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Probe(classes, weight.detach(), bias.detach(), mean, std, features)


def accuracy(probe: Probe, x: Tensor, labels: list[str]) -> float:
    return float(np.mean([p == t for p, t in zip(probe.predict(x), labels)]))


def probe_data(data: str, image_size: int, n: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Up to n (image, label) pairs: a ShapesWorld ("what shape is at the center?") or a folder
    whose data.jsonl records carry a "label"."""
    world = world_config(data, image_size)
    if world is not None:
        scenes = ShapesWorld(world, seed, "all")
        samples = [scenes[i] for i in range(n)]
        labels = [(o.shape if (o := s.scene.at(1, 1)) is not None else NOTHING) for s in samples]
        return np.stack([s.image for s in samples]), labels
    folder = load_folder(data, image_size, progress=True)
    if missing := [i + 1 for i, r in enumerate(folder.records) if r.label is None]:
        raise SmaltoError(f"{data}: record {missing[0]} of data.jsonl has no \"label\" to probe for")
    order = np.random.default_rng(seed).permutation(len(folder))[:n]
    return folder.images[order], [folder.records[i].label for i in order]
