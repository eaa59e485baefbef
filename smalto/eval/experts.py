"""Expert utilisation of a mixture-of-experts model: which experts each modality's tokens pick.

    python -m smalto.eval.experts runs/moe      # a table: per layer, the share of text and of
                                                # image-code tokens routed to each expert
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor

from smalto.format import Vocab
from smalto.model import Transformer
from smalto.model.moe import MoE


@torch.no_grad()
def expert_usage(model: Transformer, vocab: Vocab, ids: Tensor, positions: Tensor | None = None
                 ) -> dict[str, list[list[float]]]:
    """For each vocabulary range ("text", "image", ...) and layer, the share of that range's
    routed slots (tokens × active experts) each expert took, on the batch `ids` [B, T]."""
    model(ids, positions)
    ranges = {name: (ids >= span.start) & (ids < span.stop) for name, span in vocab.ranges.items()}
    usage: dict[str, list[list[float]]] = {name: [] for name in ranges}
    for block in model.layers:
        if not isinstance(block.mlp, MoE):
            raise ValueError("not a mixture-of-experts model")
        chosen = block.mlp.last_choice.view(*ids.shape, -1)
        for name, where in ranges.items():
            counts = torch.bincount(chosen[where].flatten(), minlength=model.cfg.experts).float()
            usage[name].append((counts / counts.sum().clamp_min(1)).tolist())
    return usage


def main(path: str, examples: int = 64) -> None:
    from smalto.checkpoint import load_checkpoint
    from smalto.training.data import ExampleStream

    model, vocab, tokenizers, _ = load_checkpoint(path)
    batch = ExampleStream(tokenizers, vocab, seed=10_000).batch(0, examples, model.cfg.max_seq_len)
    usage = expert_usage(model, vocab, batch.ids, batch.positions)
    experts = model.cfg.experts
    print("| layer | tokens | " + " | ".join(f"expert {e}" for e in range(experts)) + " |")
    print("|---" * (experts + 2) + "|")
    for layer in range(model.cfg.n_layers):
        for name, shares in usage.items():
            print(f"| {layer} | {name} | " + " | ".join(f"{100 * x:.0f} %" for x in shares[layer]) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:2])
