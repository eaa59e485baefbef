"""Mixture of experts: the SwiGLU MLP replaced by E routed experts, K of them per token.

A router scores the experts for each token (a linear layer, softmax in float32); the token goes
to its K best, and their outputs are mixed with the top-K probabilities renormalised to sum to 1.
No token is dropped: every expert takes every token routed to it. The layout is that of
transformers' Qwen3-MoE (router `[E, dim]`, experts' gate and up projections stacked as
`[E, 2 * hidden, dim]`, down as `[E, dim, hidden]`), so a model exports to
`Qwen3MoeForCausalLM` as it is.

Two auxiliary losses keep routing healthy, returned for the training objective:
- load balancing (Switch Transformer): E * sum_e f_e * p_e, where f_e is the share of routed
  slots that went to expert e (over the global batch, every process's tokens) and p_e its mean
  router probability (over this process's tokens: its gradient is averaged with the others');
  1 when perfectly balanced;
- router z-loss (ST-MoE): the mean squared log-sum-exp of the router logits, which keeps them small.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smalto.model.config import ModelConfig


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        e, d, h = cfg.experts, cfg.dim, cfg.mlp_hidden
        self.router = nn.Linear(d, e, bias=False)
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * h, d))
        self.down_proj = nn.Parameter(torch.empty(e, d, h))
        nn.init.normal_(self.gate_up_proj, std=0.02)
        nn.init.normal_(self.down_proj, std=0.02 / (2 * cfg.n_layers) ** 0.5)
        self.last_choice: Tensor | None = None  # [tokens, K] expert indices of the last call, for statistics

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, T, dim] -> (output [B, T, dim], auxiliary loss)."""
        flat = x.reshape(-1, x.shape[-1])
        logits = self.router(flat)
        probs = logits.float().softmax(-1)
        weights, chosen = probs.topk(self.cfg.active_experts, dim=-1)
        weights = (weights / weights.sum(-1, keepdim=True)).to(flat.dtype)
        self.last_choice = chosen.detach()
        out = torch.zeros_like(flat)
        for expert in range(self.cfg.experts):
            token, slot = torch.where(chosen == expert)
            if token.numel() == 0:
                continue
            gate, up = F.linear(flat[token], self.gate_up_proj[expert].to(flat.dtype)).chunk(2, dim=-1)
            y = F.linear(F.silu(gate) * up, self.down_proj[expert].to(flat.dtype))
            out.index_add_(0, token, y * weights[token, slot, None])
        return out.view_as(x), self.aux_loss(logits, probs, chosen)

    def aux_loss(self, logits: Tensor, probs: Tensor, chosen: Tensor) -> Tensor:
        e = self.cfg.experts
        counts = torch.bincount(chosen.flatten(), minlength=e).float()
        if self.training and torch.distributed.is_available() and torch.distributed.is_initialized():
            # f_e over the global batch, whatever the processes (in training only: a rank that
            # evaluates alone must not wait for the others)
            torch.distributed.all_reduce(counts)
        share = counts / counts.sum()
        balance = e * (share * probs.mean(0)).sum()
        z = torch.logsumexp(logits.float(), dim=-1).pow(2).mean()
        return self.cfg.balance_weight * balance + self.cfg.z_weight * z
