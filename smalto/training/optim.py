"""The optimizer of `smalto train`: AdamW, or Muon for the hidden matrices with AdamW for the rest.

Muon (Keller Jordan, 2024; `torch.optim.Muon`) replaces each matrix's momentum by its nearest
orthogonal matrix (Newton-Schulz), so every direction of the update moves at the same rate. It
only makes sense for the 2-D weights inside the blocks; the embedding and output head (lookups and
a classifier over the vocabulary), norms' gains and 3-D expert stacks stay with AdamW, as
nanochat and modded-nanogpt do. With Moonshot's learning-rate adjustment ("match_rms_adamw") an
update has the RMS of an AdamW one, so one learning rate and schedule drive both.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

OPTIMIZERS = ("adamw", "muon")
BETAS = (0.9, 0.95)


def build_optimizer(model: nn.Module, kind: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer for `model`'s trainable parameters (frozen ones get no state). Matrices decay;
    norms' gains do not."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decay = [p for _, p in trainable if p.ndim >= 2]
    plain = [p for _, p in trainable if p.ndim < 2]
    if kind == "adamw":
        return _adamw(decay, plain, lr, weight_decay)
    if kind != "muon":
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {kind!r}")
    hidden = [p for name, p in trainable if p.ndim == 2 and not name.startswith(("embed.", "lm_head.", "vision.where"))]
    chosen = {id(p) for p in hidden}
    return MuonAdamW(hidden, _adamw([p for p in decay if id(p) not in chosen], plain, lr, weight_decay),
                     lr, weight_decay)


def _adamw(decay: list, plain: list, lr: float, weight_decay: float) -> torch.optim.AdamW:
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=BETAS, fused=False)


class MuonAdamW(torch.optim.Optimizer):
    """Muon for `hidden`, the given AdamW for every other parameter, as one optimizer: one list of
    param_groups (AdamW's, then Muon's) and one state, so checkpoints, learning-rate schedules and
    torch.distributed's state-dict helpers treat it like any other."""

    def __init__(self, hidden: list[nn.Parameter], adamw: torch.optim.AdamW, lr: float, weight_decay: float):
        self._adamw = adamw
        self._muon = Muon(hidden, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
        # The groups are the children's own dicts: setting a group's lr here sets it there.
        super().__init__(adamw.param_groups + self._muon.param_groups, {})
        self._share()

    def _share(self) -> None:
        n = len(self._adamw.param_groups)
        self._adamw.param_groups, self._muon.param_groups = self.param_groups[:n], self.param_groups[n:]
        self._adamw.state = self._muon.state = self.state  # disjoint parameters: one dict holds both

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)  # replaces param_groups and state with new objects
        self._share()

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("MuonAdamW.step takes no closure")
        self._adamw.step()
        self._muon.step()


class Muon(torch.optim.Muon):
    """`torch.optim.Muon` with the Newton-Schulz iterations of same-shaped matrices batched: a
    model's layers share a handful of shapes, and on a CPU the many small matmuls cost more in
    calls than in arithmetic (shapes-tiny: 114 against 174 ms per step). The same arithmetic
    (the same updates: tests/test_optim.py) and the same state, so checkpoints move freely between the two.
    Sharded parameters (FSDP2) take torch's per-matrix path."""

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None or any(isinstance(p, DTensor) for g in self.param_groups for p in g["params"]):
            return super().step(closure)
        for group in self.param_groups:
            by_shape: dict[torch.Size, list[tuple[Tensor, Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                by_shape.setdefault(p.shape, []).append((p, update))
            lr, decay = group["lr"], group["weight_decay"]
            for shape, pairs in by_shape.items():
                updates = orthogonalize(torch.stack([u for _, u in pairs]), group["ns_coefficients"],
                                        group["ns_steps"], group["eps"])
                scale = _adjusted_lr(lr, group["adjust_lr_fn"], shape)
                for (p, _), update in zip(pairs, updates):
                    p.mul_(1 - lr * decay)
                    p.add_(update, alpha=-scale)


def orthogonalize(g: Tensor, coefficients, steps: int, eps: float) -> Tensor:
    """Newton-Schulz on a batch of matrices [n, A, B] in bf16 (what torch.optim.Muon does to one):
    close to the nearest semi-orthogonal matrices, singular values pushed towards 1."""
    a, b, c = coefficients
    x = g.bfloat16()
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp_min(eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


def _adjusted_lr(lr: float, how: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's learning-rate adjustment for a matrix of this shape."""
    rows, cols = shape[:2]
    if how == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(max(1, rows / cols)) if how in (None, "original") else lr
