"""Answers with test-time compute: decoding, thinking, voting and the solver's check.

`Answers` is the part of `Pipeline` that decodes text answers; one routine (`answers`) serves
batched replies and a streamed chat reply alike. What each effort level spends is
`smalto.effort`'s (kept free of torch, for the command line's flags).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from dataclasses import replace

import numpy as np

from smalto.data.shapes import parse_caption
from smalto.effort import SURE, VOTE_TEMPERATURE, Effort, Reply
from smalto.format import Allowed
from smalto.inference import Detokenizer, Sampling
from smalto.inference.detok import detokenize
from smalto.verify.spec import SpecError, parse_question

MAX_ANSWER_TOKENS = 48


class Answers:
    """Decoding answers with test-time compute (a part of `Pipeline`: it reads the pipeline's
    engine, vocab, tokenizers, context and whether the model thinks)."""

    def answers(self, prompts: list[list[int]], questions: list[str], level: Effort, votes: int, budget: int,
                seed: int = 0, answer_tokens: int = MAX_ANSWER_TOKENS, stream: bool = False
                ) -> Generator[tuple[str, str], None, list[Reply]]:
        """Think -> vote -> check, for a batch of prompts; returns a Reply per prompt.

        The instant answer first, unless the level always thinks; then, for the prompts whose
        level thinks ("unsure": only when the instant answer is not sure), `votes` traces (greedy
        with one) whose answers the solver checks against the model's own description of the
        scene (`questions[i]` is what it checks), voted. With `stream` (one prompt), yields
        ("reasoning", piece) as a single trace is decoded, or the voted trace whole."""
        think = level.think if self.thinks else "never"
        replies: list[Reply | None] = [None] * len(prompts)
        if think != "always":
            replies = [self.vote(c) for c in self.decode(prompts, votes, 0, votes > 1, seed, answer_tokens)]
        unsure = [i for i, r in enumerate(replies) if r is None or (think == "unsure" and r.sure < SURE)]
        if not unsure:
            return replies
        if stream and votes == 1:
            thought = [[(yield from self._streamed_trace(prompts[0], budget, answer_tokens))]]
        else:
            thought = self.decode([prompts[i] for i in unsure], votes, budget, votes > 1, seed, answer_tokens)
        for i, candidates in zip(unsure, thought):
            spent = replies[i].tokens if replies[i] is not None else 0
            replies[i] = self.vote([checked(questions[i], c) for c in candidates])
            replies[i].tokens += spent
            if stream and votes > 1:
                yield "reasoning", replies[i].reasoning
        return replies

    def _streamed_trace(self, prompt: list[int], budget: int, answer_tokens: int) -> Generator[tuple, None, Reply]:
        """One greedy trace and its answer, yielding the trace's text as it is decoded."""
        v = self.vocab
        limit = min(answer_tokens + budget + 2, self.context - len(prompt))
        trace = Detokenizer(self.tokenizers.text, eos=v.end_think)
        tokens, logprobs = [], []
        for step in self.engine.steps([prompt], limit, Sampling(), Allowed(thinking=budget), forced=[[v.think]]):
            tokens.append(int(step.tokens[0]))
            logprobs.append(float(step.logprobs[0]))
            if len(tokens) > 1 and (piece := trace.push(tokens[-1])):
                yield "reasoning", piece
        if piece := trace.finish():
            yield "reasoning", piece
        return self.parse(tokens, logprobs, thinking=True)

    def decode(self, prompts: list[list[int]], votes: int, budget: int, sample: bool, seed: int = 0,
               answer_tokens: int = MAX_ANSWER_TOKENS) -> list[list[Reply]]:
        """`votes` continuations of each prompt, all in one batch (thinking first when budget > 0),
        greedy or sampled; per prompt, a Reply for each."""
        v = self.vocab
        rows = [p for p in prompts for _ in range(votes)]
        room = self.context - max(len(p) for p in rows)
        limit = min(answer_tokens + (budget + 2 if budget else 0), room)
        sampling = Sampling(temperature=VOTE_TEMPERATURE, seed=seed) if sample else Sampling()
        outs = self.engine.generate(rows, limit, sampling, Allowed(thinking=budget),
                                    forced=[[v.think]] * len(rows) if budget else None)
        replies = [self.parse(g.tokens, g.logprobs, bool(budget)) for g in outs]
        return [replies[i:i + votes] for i in range(0, len(replies), votes)]

    def beams(self, prompts: list[list[int]], beams: int) -> list[str]:
        limit = min(MAX_ANSWER_TOKENS, self.context - max(len(p) for p in prompts))
        return [detokenize(self.tokenizers.text, self.engine.beam_search(p, beams, limit), self.vocab.eos)
                for p in prompts]

    def parse(self, tokens: list[int], logprobs: list[float], thinking: bool) -> Reply:
        """A decoded reply: `[<think> trace </think>] answer <eos>` (a trace cut by the token limit
        leaves no answer); `sure` is the answer's least token probability."""
        v, thought = self.vocab, 0
        if thinking:
            thought = tokens.index(v.end_think) + 1 if v.end_think in tokens else len(tokens)
        text = detokenize(self.tokenizers.text, tokens[thought:], v.eos)
        reasoning = self.tokenizers.text.decode(tokens[1:thought - 1]).strip() if thought else ""
        sure = float(np.exp(min(logprobs[thought:], default=0.0)))
        return Reply(text, reasoning, len(tokens), thought, sure=sure)

    @staticmethod
    def vote(candidates: list[Reply]) -> Reply:
        """The most frequent answer (ties: the first), carrying the cost of all candidates; its
        `sure` becomes its share of the votes."""
        if len(candidates) == 1:
            return candidates[0]
        counts = Counter(c.text for c in candidates)
        best = counts.most_common(1)[0][0]
        winner = next(c for c in candidates if c.text == best)
        return replace(winner, tokens=sum(c.tokens for c in candidates),
                       reasoning_tokens=sum(c.reasoning_tokens for c in candidates), votes=dict(counts),
                       sure=counts[best] / len(candidates))


def checked(question: str, reply: Reply) -> Reply:
    """The answer the solver computes from the model's own description of the scene (the trace's
    first part), when both the question and the description can be read."""
    scene = parse_caption(reply.reasoning.split(";")[0])
    try:
        q = parse_question(question)
    except SpecError:
        return reply
    if scene is None:
        return reply
    truth = q.answer(scene)
    return replace(reply, text=truth, model_text=reply.text, check="agrees" if truth == reply.text else "corrected")


def drain(events: Generator):
    """What a generator returns, its events dropped."""
    while True:
        try:
            next(events)
        except StopIteration as stop:
            return stop.value
