"""Generation: the only place that loops over tokens.

KV-cached decoding of a batch of prompts (left-padded to a common length), greedy or sampled
(temperature, top-k, top-p), constrained by the sequence `Grammar` so an illegal token can not be
chosen, with classifier-free guidance for drawing (conditional and unconditional rows decoded in
one batch, logits mixed u + s * (c - u)), and beam search for text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from smalto import options
from smalto.model import KVCache, Transformer
from smalto.sequence import Grammar, Vocab


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 means greedy
    top_k: int = 0  # 0 means no limit
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("temperature", "top_k", "top_p", "seed"):
            options.check(name, getattr(self, name))


def sample(logits: Tensor, s: Sampling, generator: torch.Generator | None) -> Tensor:
    """logits [B, V] with illegal ids at -inf -> ids [B]."""
    if s.temperature <= 0:
        return logits.argmax(-1)
    # Below 1e-5 sampling is greedy in float32 anyway, and a smaller divisor would round to 0 (NaN).
    logits = logits / max(s.temperature, 1e-5)
    if s.top_k > 0:
        kth = logits.topk(min(s.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the ones before it already reach top_p; the most likely always stays.
        drop = cumulative - sorted_logits.softmax(-1) >= s.top_p
        drop[:, 0] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def left_pad(prompts: list[list[int]], pad: int) -> tuple[Tensor, Tensor, Tensor]:
    """ids, valid, positions [B, L] for prompts padded on the left to the longest."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    valid = torch.zeros(len(prompts), width, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        valid[i, width - len(p):] = True
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    return ids, valid, positions


class Engine:
    def __init__(self, model: Transformer, vocab: Vocab):
        self.model = model.eval()
        self.vocab = vocab

    @property
    def device(self) -> torch.device:
        return self.model.embed.weight.device

    def _cache(self, batch: int, length: int) -> KVCache:
        # Lengths rounded up to a multiple of 64: a compiled decoding step then sees few cache shapes.
        length = min(-(-length // 64) * 64, self.model.cfg.max_seq_len)
        return KVCache(self.model.cfg, batch, length, torch.float32, self.device)

    def warm_up(self) -> None:
        """Two tiny generations whose batch size and cache length both differ, so that a compiled
        decoding step compiles now (once for fixed sizes, once with them symbolic) rather than
        during the first requests."""
        self.generate([[self.vocab.bos]], 2, ignore_eos=True)
        self.generate([[self.vocab.bos] * 70] * 3, 2, ignore_eos=True)

    def generate(self, prompts: list[list[int]], max_new_tokens: int, sampling: Sampling = Sampling(),
                 images: str = "never", guidance: float | None = None,
                 unconditional: list[list[int]] | None = None, ignore_eos: bool = False) -> list[list[int]]:
        """Continue each prompt until <eos> (or <eoi> when drawing) or max_new_tokens.

        images: "never" (text only), "allowed" (text that may contain images) or "only" (the
        prompt ends in <boi>; the result is the image codes and <eoi>). With `guidance`, each
        prompt's `unconditional` twin is decoded alongside and the logits are mixed. `ignore_eos`
        forbids <eos>, so every row gets exactly max_new_tokens (what benchmarks need).
        Returns the new ids of each row (without the prompt).
        """
        rows: list[list[int]] = [[] for _ in prompts]
        for tokens in self.stream(prompts, max_new_tokens, sampling, images, guidance, unconditional, ignore_eos):
            for row, token in zip(rows, tokens.tolist()):
                if token != self.vocab.pad:
                    row.append(token)
        return rows

    @torch.inference_mode()
    def stream(self, prompts: list[list[int]], max_new_tokens: int, sampling: Sampling = Sampling(),
               images: str = "never", guidance: float | None = None,
               unconditional: list[list[int]] | None = None, ignore_eos: bool = False) -> Iterator[Tensor]:
        """`generate`, one step at a time: yields the step's token of every row [B] (pad once a
        row has stopped). The caller may stop iterating at any time; nothing else is computed."""
        v, n = self.vocab, len(prompts)
        if not prompts or any(not p for p in prompts):
            raise ValueError("every prompt needs at least one token")
        guided = guidance is not None
        if guided and (unconditional is None or len(unconditional) != n):
            raise ValueError("guidance needs one unconditional prompt per prompt")
        rows = prompts + (unconditional if guided else [])
        ids, valid, positions = left_pad(rows, v.pad)
        limit = ids.shape[1] + max_new_tokens
        if limit > self.model.cfg.max_seq_len:
            raise ValueError(f"prompt ({ids.shape[1]} tokens) + {max_new_tokens} new tokens exceed the "
                             f"context of {self.model.cfg.max_seq_len}")
        ids, valid, positions = ids.to(self.device), valid.to(self.device), positions.to(self.device)
        cache = self._cache(len(rows), limit)
        logits = self.model(ids, positions, cache, valid)[:, -1].float()
        next_pos = positions[:, -1] + 1

        grammar = Grammar(v, n, images, in_image=images == "only", device=self.device, eos=not ignore_eos)
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        stop = v.eoi if images == "only" else v.eos
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        for step in range(max_new_tokens):
            if guided:
                cond, uncond = logits[:n], logits[n:]
                logits = uncond + guidance * (cond - uncond)
            logits = logits.masked_fill(~grammar.mask(), float("-inf"))
            token = sample(logits, sampling, generator)
            token = torch.where(done, v.pad, token)
            grammar.advance(token)
            done |= token == stop
            yield token
            if bool(done.all()) or step + 1 == max_new_tokens:
                return
            feed = torch.cat([token, token]) if guided else token
            logits = self.model(feed[:, None], next_pos[:, None], cache)[:, -1].float()
            next_pos = next_pos + 1

    @torch.inference_mode()
    def beam_search(self, prompt: list[int], beams: int = 4, max_new_tokens: int = 48,
                    length_penalty: float = 1.0) -> list[int]:
        """Text continuation of one prompt with the highest length-normalised log-probability
        (score = sum log p / length ** length_penalty). Returns the new ids, <eos> included."""
        v = self.vocab
        options.check("beams", beams)
        if len(prompt) + max_new_tokens > self.model.cfg.max_seq_len:
            raise ValueError(f"prompt ({len(prompt)} tokens) + {max_new_tokens} new tokens exceed the "
                             f"context of {self.model.cfg.max_seq_len}")
        ids = torch.tensor([prompt], dtype=torch.long, device=self.device)
        cache = self._cache(1, len(prompt) + max_new_tokens)
        logits = self.model(ids, None, cache)[:, -1].float()
        legal = (v.text_mask() | v.one(v.eos)).to(self.device)
        alive: list[list[int]] = [[]]
        scores = torch.zeros(1, device=self.device)
        finished: list[tuple[float, list[int]]] = []
        for step in range(max_new_tokens):
            logp = logits.log_softmax(-1).masked_fill(~legal, float("-inf"))
            total = (scores[:, None] + logp).flatten()
            top = total.topk(min(2 * beams, int(torch.isfinite(total).sum()))).indices
            next_rows, next_tokens, next_scores = [], [], []
            for flat in top.tolist():
                row, token = divmod(flat, logp.shape[1])
                seq = alive[row] + [token]
                if token == v.eos:
                    finished.append((float(total[flat]) / len(seq) ** length_penalty, seq))
                elif len(next_rows) < beams:
                    next_rows.append(row)
                    next_tokens.append(token)
                    next_scores.append(total[flat])
            best_alive = max(next_scores, default=None)
            if not next_rows or (len(finished) >= beams and best_alive is not None and
                                 max(f[0] for f in finished) >= float(best_alive) / (step + 1) ** length_penalty):
                break
            alive = [alive[r] + [t] for r, t in zip(next_rows, next_tokens)]
            scores = torch.stack(next_scores)
            cache.reorder(torch.tensor(next_rows, device=self.device))
            feed = torch.tensor(next_tokens, device=self.device)[:, None]
            logits = self.model(feed, None, cache)[:, -1].float()
        if not finished:  # ran out of room: the best unfinished beam
            return alive[int(scores.argmax())]
        return max(finished, key=lambda f: f[0])[1]
