"""The optimizer of `smalto train`: AdamW, or Muon for the hidden matrices with AdamW for the rest.

Muon (Keller Jordan, 2024; `torch.optim.Muon`) replaces each matrix's momentum by its nearest
orthogonal matrix (Newton-Schulz), so every direction of the update moves at the same rate. It
only makes sense for the 2-D weights inside the blocks; the embedding and output head (lookups and
a classifier over the vocabulary), norms' gains and 3-D expert stacks stay with AdamW, as
nanochat and modded-nanogpt do. With Moonshot's learning-rate adjustment ("match_rms_adamw") an
update has the RMS of an AdamW one, so one learning rate and schedule drive both.
"""

from __future__ import annotations

import torch
from torch import nn

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
    hidden = [p for name, p in trainable if p.ndim == 2 and not name.startswith(("embed.", "lm_head."))]
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
        self._muon = torch.optim.Muon(hidden, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
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
