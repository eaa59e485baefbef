"""Test-time compute: what each effort level spends, and what a reply or a drawing reports.

One knob everywhere (`effort=` in Python, `--effort` on the command line, `reasoning_effort` over
HTTP), with `best_of` to set the number of candidates or votes explicitly:

    none    instant: one greedy answer, one drawing (what the model does on its own)
    low     adaptive: answer at once when the model is sure, else think; drawings planned by the
            solver, best of 2
    medium  think before every answer; best of 4
    high    think before every answer; best of 16

Self-consistency (answers voted over `best_of` sampled thoughts or instant answers) is there to
ask for; no level uses it by default, because on the shipped model it did not pay: voting over
sampled traces never beat greedy thinking (docs/test-time.md).

Thinking: the model writes `<think>` a description of the scene and the facts the question needs
`</think>`, then the answer; the solver reads the description back into a scene graph and
computes the answer from it (`pipeline.answers.Answers.answers`). A drawing is planned by the solver
(relations become absolute cells; a model drawing in the cells layout is given the plan's words for
each cell and draws their codes), drawn `best_of` times in one batch and judged by the pixel
verifier against the specification (or, for a model without one, ranked by the model's own
log p(prompt | image)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smalto.errors import SmaltoError

THINKING_BUDGET = 64  # the longest trace in training is ~45 tokens (a 3-object description + facts)
VOTE_TEMPERATURE = 0.7  # answers and traces sampled for self-consistency (drawings keep the model's own)
# Adaptive: answers whose least likely token has at least this probability are given at once.
# Calibrated on a development split (`python bench/test_time.py --calibrate`, seed 40000): the
# lowest threshold keeping 95 % of thinking's accuracy (see docs/test-time.md).
SURE = 0.7


@dataclass(frozen=True)
class Effort:
    name: str
    think: str  # "never", "unsure" (adaptive: when the instant answer is not sure), "always"
    votes: int  # reading: answers sampled and voted (self-consistency; 1: greedy)
    best_of: int  # drawing: candidates per image, judged by the verifier
    plan: bool  # drawing prompts parsed, planned and checked by the solver


EFFORTS = {e.name: e for e in (
    Effort("none", "never", 1, 1, False),
    Effort("low", "unsure", 1, 2, True),
    Effort("medium", "always", 1, 4, True),
    Effort("high", "always", 1, 16, True),
)}


def effort_level(name: str | None) -> Effort:
    """The named level (None: "none"), or a SmaltoError listing the levels."""
    if name is None:
        return EFFORTS["none"]
    if name not in EFFORTS:
        raise SmaltoError(f"effort must be one of {', '.join(EFFORTS)}, got {name!r}")
    return EFFORTS[name]


@dataclass
class Reply:
    """An answer and what it cost: the thinking behind it ("" when given instantly), the tokens
    decoded (thinking included, all votes), and who produced it (`answered_by`)."""
    text: str
    reasoning: str = ""
    tokens: int = 0
    reasoning_tokens: int = 0
    # "agrees": the model's answer follows from its own description; "corrected": it did not, and
    # the solver's answer from the description replaced it; None: not checked (no description, or
    # a question or description the solver cannot read): the model's answer stands.
    check: str | None = None
    model_text: str | None = None  # the model's own answer (None: it is `text`)
    votes: dict[str, int] = field(default_factory=dict)  # answer -> votes, with best_of > 1
    sure: float = 1.0  # the answer's least token probability, or its share of the votes

    @property
    def answered_by(self) -> str:
        """"solver" when the answer was computed by the symbolic core from the model's description
        (whether or not it agreed with the model's), else "model" (its own tokens)."""
        return "model" if self.check is None else "solver"

    @property
    def own(self) -> str:
        """What the model itself answered, whoever answered in the end."""
        return self.text if self.model_text is None else self.model_text


@dataclass
class Drawing:
    """An image (or a sound's wave) and how it was chosen: the prompt drawn (the solver's absolute rewrite when
    planned: the plan, not what came out), the verifier's verdict on it and its reading of the
    pixels (what came out), and the number of candidates it was chosen from (with more than one,
    the verifier selected it: pass@N, not the model's rate per drawing)."""
    image: np.ndarray
    prompt: str
    verdict: object | None = None  # a verify.smt.Verdict, when the prompt was checked
    candidates: int = 1
    score: float | None = None  # the self-verifier's mean log p(prompt | image), when ranked by it
    first: np.ndarray | None = None  # the first candidate, as drawn before any selection
    reading: str | None = None  # what the pixel verifier reads in the image (a ShapesWorld model)
    note: str | None = None  # why the prompt lies outside the world the model knows, if it does
