"""Generation: the only place that loops over tokens.

A decode step runs the model on one new token per row against a preallocated KV cache; between
steps, logits processors (guidance, the format's mask, temperature / top-k / top-p, forced tokens)
shape the logits and a strategy (greedy, sample) picks the tokens; beam search drives the same
step with several continuations of one prompt. Prompts are left-padded to a common length; the
format (`FormatState`) says which ids are legal next and where each row's next token goes.

Every emitted token comes with its log-probability under the model among the tokens the format
allows (log_softmax of its masked logits, before guidance and sampling processors: the policy's
own probability), and each row may have its own token limit. Equal prompts in a batch (the
candidates of best-of-N, the unconditional twins of guidance) are prefilled once.

A token may carry codes beside itself (a stepped sound's finer levels, `Vocab.item_extra`): a
prompt holding them is a `format.Carrying`, and at a step whose phase carries codes each is
picked with the same guidance and sampling as the token and fed with it at the next step. In
the delay pattern each comes from the same logits among its level's ids (MusicGen's parallel
heads); in the depth pattern the model's depth head predicts them one level after another from
the step's state and the codes picked before (Moshi).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from smalto import options
from smalto.format import Allowed, FormatState, Vocab, picture_starts, positions
from smalto.inference.processors import FormatMask, ForcedTokens, Guidance, Processor
from smalto.inference.strategies import Sampling
from smalto.model import KVCache, Transformer
from smalto.model.fusion import Images, batch_images


class Prompt(list):
    """A prompt's ids and the pixels (uint8 [H, W, 3]) of the pictures it reads, in order, for a
    model that sees pixels (smalto.model.fusion). A list of ids, so whatever handles ids handles it."""

    def __init__(self, ids: list[int], pictures: list | tuple = ()):
        super().__init__(ids)
        self.pictures = tuple(pictures)


def _key(prompt: list[int]) -> tuple:
    """Equal prompts read the same pictures, and their tokens carry the same codes, too."""
    carried = tuple(map(tuple, getattr(prompt, "extra", ())))
    return tuple(prompt), tuple(map(id, getattr(prompt, "pictures", ()))), carried


@dataclass
class Step:
    """One decoding step of every row: the token and its log-probability (pad and 0 once a row
    has finished)."""
    tokens: Tensor  # int64 [B]
    logprobs: Tensor  # float32 [B] (with the codes it carries: their log-probabilities added)
    extra: Tensor | None = None  # int64 [B, width]: the codes each token carries (-1: none), if any may


@dataclass
class Generation:
    tokens: list[int]  # the new ids, without the prompt
    logprobs: list[float]
    extra: list[list[int]] = field(default_factory=list)  # per token, the codes it carries (if any may)


def left_pad(v: Vocab, prompts: list[list[int]]) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """ids, valid [B, L], positions [B, 3, L] and the codes tokens carry [B, L, width] (None when no
    prompt's do) for prompts padded on the left to the longest (padding is at position 0 and
    hidden from attention)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), v.pad, dtype=torch.long)
    valid = torch.zeros(len(prompts), width, dtype=torch.bool)
    pos = torch.zeros(len(prompts), 3, width, dtype=torch.long)
    carried = [v.carried(p) for p in prompts]
    extra = torch.full((len(prompts), width, v.width), -1, dtype=torch.long) if any(carried) else None
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        valid[i, width - len(p):] = True
        pos[i, :, width - len(p):] = positions(v, p)
        if carried[i]:
            extra[i, width - len(p):] = torch.tensor(carried[i], dtype=torch.long)
    return ids, valid, pos, extra


class Engine:
    def __init__(self, model: Transformer, vocab: Vocab):
        self.model = model.eval()
        self.vocab = vocab
        self.network = None  # a compiled copy of the model's layers for one-token steps (`compile`)

    @property
    def device(self) -> torch.device:
        return self.model.embed.weight.device

    def compile(self, enabled: bool = True) -> None:
        """Compile the one-token decoding step with torch.compile (inductor), so it runs as one
        generated program instead of hundreds of small ops. Its shapes depend only on the batch
        size and the cache length: the first call compiles for them (seconds); a second batch
        size or cache length recompiles once with those sizes symbolic, then nothing more.
        Prompts stay eager. enabled=False goes back to the eager step."""
        self.network = torch.compile(self.model.network) if enabled else None

    def warm_up(self) -> None:
        """Two tiny generations whose batch size and cache length both differ, so that a compiled
        decoding step compiles now (once for fixed sizes, once with them symbolic) rather than
        during the first requests."""
        text = Allowed(eos=False)
        self.generate([[self.vocab.bos]], 2, allowed=text)
        self.generate([[self.vocab.bos] * 70] * 3, 2, allowed=text)

    def _cache(self, batch: int, length: int) -> KVCache:
        # Lengths rounded up to a multiple of 64: a compiled decoding step then sees few cache shapes.
        length = min(-(-(length + self.model.prompt_tokens) // 64) * 64, self.model.cfg.max_seq_len)
        return KVCache(self.model.cfg, batch, length, torch.float32, self.device)

    def images(self, prompts: list[list[int]], width: int) -> Images | None:
        """The pictures of prompts left-padded to `width` (`left_pad`), for a model that sees pixels."""
        pictures = [list(getattr(p, "pictures", ())) for p in prompts]
        if self.model.vision is None:
            if any(pictures):
                raise ValueError("a tokens model reads pictures as codes in the prompt, not as pixels")
            return None
        fusion = self.model.cfg.fusion
        starts = [[s + width - len(p) for s in picture_starts(self.vocab, p, fusion)] for p in prompts]
        images = batch_images(pictures, starts)
        return None if images is None else images.to(self.device)

    def _check_room(self, prompt_len: int, max_new: int) -> None:
        # (a prompt-tuned model's learned embeddings take room before every prompt)
        if prompt_len + max_new > self.model.cfg.max_seq_len - self.model.prompt_tokens:
            raise ValueError(f"prompt ({prompt_len} tokens) + {max_new} new tokens exceed the "
                             f"context of {self.model.cfg.max_seq_len - self.model.prompt_tokens}")

    def _step(self, tokens: Tensor, where: Tensor, cache: KVCache, extra: Tensor | None = None
              ) -> tuple[Tensor, Tensor | None]:
        """Feed one new token per row at its position [B, 3] (with the codes it carries [B, width]);
        the next logits [B, V] and `_last`'s state."""
        return self._last(self.model(tokens[:, None], where[:, :, None], cache, network=self.network,
                                     extra=None if extra is None else extra[:, None]))

    @staticmethod
    def _last(output) -> tuple[Tensor, Tensor | None]:
        """The last position's logits (float32) and final state [B, dim] (a model with a depth head,
        which predicts from it; else None)."""
        return output.logits[:, -1].float(), None if output.hidden is None else output.hidden[:, -1]

    def generate(self, prompts: list[list[int]], max_new_tokens: int | list[int], sampling: Sampling = Sampling(),
                 allowed: Allowed = Allowed(), unconditional: list[list[int]] | None = None,
                 forced: list[list[int | None]] | None = None) -> list[Generation]:
        """Continue each prompt until it finishes (text: <eos>; a drawing: its image closes) or
        reaches its token limit. See `steps` for the arguments."""
        rows = [Generation([], []) for _ in prompts]
        for step in self.steps(prompts, max_new_tokens, sampling, allowed, unconditional, forced):
            carried = step.extra.tolist() if step.extra is not None else [None] * len(rows)
            for row, token, logprob, codes in zip(rows, step.tokens.tolist(), step.logprobs.tolist(), carried):
                if token != self.vocab.pad:
                    row.tokens.append(token)
                    row.logprobs.append(logprob)
                    if codes is not None:
                        row.extra.append(codes)
        return rows

    @torch.inference_mode()
    def steps(self, prompts: list[list[int]], max_new_tokens: int | list[int], sampling: Sampling = Sampling(),
              allowed: Allowed = Allowed(), unconditional: list[list[int]] | None = None,
              forced: list[list[int | None]] | None = None) -> Iterator[Step]:
        """Decode all prompts together, one `Step` at a time; the caller may stop iterating at any
        time and nothing more is computed.

        max_new_tokens: one limit for all rows, or one per row. allowed: what rows may emit (text,
        items they may open; `format.DRAWING` for a prompt ending in <boi>). With
        `sampling.guidance`, each prompt's `unconditional` twin is decoded alongside and the
        logits are mixed. forced: per row, tokens it must emit first (None: a step it chooses).
        """
        v, n = self.vocab, len(prompts)
        if not prompts or any(not p for p in prompts):
            raise ValueError("every prompt needs at least one token")
        limits = torch.tensor([max_new_tokens] * n if isinstance(max_new_tokens, int) else max_new_tokens)
        if len(limits) != n or (limits < 0).any():
            raise ValueError("max_new_tokens must be >= 0, one value or one per prompt")
        guided = sampling.guidance is not None
        if guided and (unconditional is None or len(unconditional) != n):
            raise ValueError("guidance needs one unconditional prompt per prompt")
        if forced is not None and len(forced) != n:
            raise ValueError("forced needs one list of tokens per prompt")
        rows = prompts + (unconditional if guided else [])
        # Equal prompts (best-of-N, votes, the unconditional twins) are prefilled once, then copied.
        unique: dict[tuple, int] = {}
        kept: list[list[int]] = []
        for p in rows:
            if _key(p) not in unique:
                unique[_key(p)] = len(kept)
                kept.append(p)
        ids, valid, pos, extra = left_pad(v, kept)
        longest = int(limits.max())
        self._check_room(ids.shape[1], longest)
        if longest == 0:
            return
        device = self.device
        cache = self._cache(len(unique), ids.shape[1] + longest)
        logits, hidden = self._last(self.model(ids.to(device), pos.to(device), cache, valid.to(device),
                                               images=self.images(kept, ids.shape[1]),
                                               extra=None if extra is None else extra.to(device)))
        if len(unique) < len(rows):
            copies = torch.tensor([unique[_key(p)] for p in rows], device=device)
            cache.reorder(copies)
            logits, hidden = logits[copies], None if hidden is None else hidden[copies]

        state = FormatState(v, rows, allowed, device)
        processors: list[Processor] = [*([Guidance(sampling.guidance)] if guided else []), FormatMask(state),
                                       *sampling.processors(), *([ForcedTokens(forced)] if forced else [])]
        pick = sampling.strategy(device)
        limits, done = limits.to(device), limits.to(device) == 0
        for step in range(longest):
            raw = logits[:n]
            logprobs = raw.masked_fill(~state.mask()[:n], float("-inf")).log_softmax(-1)
            # (a carried code is picked from the guided logits before the format masks them: only then)
            guided_logits = processors[0](logits) if guided and state.width else raw
            for processor in processors:
                logits = processor(logits)
            token = torch.where(done, v.pad, pick(logits))
            logprob = torch.where(done, 0.0, logprobs.gather(1, token[:, None]).squeeze(1))
            codes = None
            if state.width:  # (before `advance`: the codes the step's phase carries)
                if self.model.depth is not None:
                    codes, carried_logp = self._depth_carried(state.extra_mask()[:n], hidden, token, sampling, pick,
                                                              processors[0] if guided else None)
                else:
                    codes, carried_logp = self._carried(state.extra_mask()[:n], raw, guided_logits, sampling, pick)
                codes = torch.where(done[:, None], -1, codes)
                logprob = logprob + torch.where(done, 0.0, carried_logp)
            feed, where = torch.cat([token, token]) if guided else token, state.positions()
            state.advance(feed)
            done |= state.finished[:n] | (step + 1 >= limits)
            yield Step(token, logprob, codes)
            if bool(done.all()):
                return
            carried = codes if codes is None or not guided else torch.cat([codes, codes])  # (the twins carry them too)
            logits, hidden = self._step(feed, where, cache, carried)

    @staticmethod
    def _carried(masks: Tensor, raw: Tensor, guided: Tensor, sampling: Sampling, pick) -> tuple[Tensor, Tensor]:
        """The codes each row's token carries, [n, width] (-1 where its phase carries none), each
        picked among its level's ids from the step's guided logits with the sampling's processors,
        and their summed log-probabilities under the model (from the raw logits, as a token's)."""
        n, width, size = masks.shape
        held = masks.any(-1)  # [n, width]
        if not bool(held.any()):
            return torch.full((n, width), -1, dtype=torch.long, device=raw.device), raw.new_zeros(n)
        # (a slot that carries nothing is given one legal id to pick, then emptied)
        legal = masks | (~held[..., None] & (torch.arange(size, device=raw.device) == 0))
        chosen = guided[:, None].expand(n, width, size).masked_fill(~legal, float("-inf")).reshape(n * width, size)
        for processor in sampling.processors():
            chosen = processor(chosen)
        codes = torch.where(held, pick(chosen).view(n, width), -1)
        logp = raw[:, None].masked_fill(~legal, float("-inf")).log_softmax(-1)
        picked = logp.gather(-1, codes.clamp_min(0)[..., None]).squeeze(-1)
        return codes, torch.where(held, picked, 0.0).sum(-1)

    def _depth_carried(self, masks: Tensor, state: Tensor, token: Tensor, sampling: Sampling, pick,
                       guidance: Guidance | None) -> tuple[Tensor, Tensor]:
        """`_carried` for a model with a depth head: slot k's code (level k) from the head's
        logits given the step's state [rows, dim] and the frame's codes so far (the token, then
        slots 1 .. k-1), with the guidance (the twins' states after the n rows') and the
        sampling's processors; and their summed log-probabilities under the model."""
        n, width, size = masks.shape
        held = masks.any(-1)
        codes = torch.full((n, width), -1, dtype=torch.long, device=token.device)
        logp_sum = torch.zeros(n, device=token.device)
        if not bool(held.any()):
            return codes, logp_sum
        rows = len(state)  # (n, or 2n with the unconditional twins)
        frame = token.repeat(rows // n)[:, None]  # [rows, k]: the frame's ids so far
        for k in range(1, width):
            start, stop = self.vocab.level_span("audio", k)
            local = self.model.depth_logits(state, frame)[:, -1].float()  # [rows, codes]: level k's
            full = local.new_full((rows, size), float("-inf"))
            full[:, start:stop] = local
            legal = masks[:, k] | (~held[:, k, None] & (torch.arange(size, device=token.device) == start))
            raw = full[:n].masked_fill(~legal, float("-inf"))
            chosen = (guidance(full) if guidance is not None else full[:n]).masked_fill(~legal, float("-inf"))
            for processor in sampling.processors():
                chosen = processor(chosen)
            picked = pick(chosen)
            logp = raw.log_softmax(-1).gather(1, picked[:, None]).squeeze(1)
            codes[:, k] = torch.where(held[:, k], picked, -1)
            logp_sum += torch.where(held[:, k], logp, 0.0)
            frame = torch.cat([frame, picked.repeat(rows // n)[:, None]], 1)
        return codes, logp_sum

    @torch.inference_mode()
    def beam_search(self, prompt: list[int], beams: int = 4, max_new_tokens: int = 48,
                    length_penalty: float = 1.0) -> list[int]:
        """Text continuation of one prompt with the highest length-normalised log-probability
        (score = sum log p / length ** length_penalty). Returns the new ids, <eos> included."""
        v = self.vocab
        options.check("beams", beams)
        self._check_room(len(prompt), max_new_tokens)
        ids, valid, pos, extra = left_pad(v, [prompt])
        cache = self._cache(1, len(prompt) + max_new_tokens)
        logits, _ = self._last(self.model(ids.to(self.device), pos.to(self.device), cache,
                                          images=self.images([prompt], ids.shape[1]),
                                          extra=None if extra is None else extra.to(self.device)))
        state = FormatState(v, [prompt], Allowed(), self.device)
        legal = FormatMask(state)
        alive: list[list[int]] = [[]]
        scores = torch.zeros(1, device=self.device)
        finished: list[tuple[float, list[int]]] = []
        for step in range(max_new_tokens):
            logp = legal(logits.log_softmax(-1))
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
            kept = torch.tensor(next_rows, device=self.device)
            cache.reorder(kept)
            state.reorder(kept)
            feed, where = torch.tensor(next_tokens, device=self.device), state.positions()
            state.advance(feed)
            logits, _ = self._step(feed, where, cache)
        if not finished:  # ran out of room: the best unfinished beam
            return alive[int(scores.argmax())]
        return max(finished, key=lambda f: f[0])[1]
