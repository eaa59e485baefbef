"""Valid ranges of numeric options, stated once.

The Python API (`Sampling`, `Pipeline`), the CLI's flags and the HTTP schema all check sampling
options against `SAMPLING`, so `--temperature nan`, `Sampling(temperature=float("inf"))` and
`{"temperature": -1}` are refused by the same rule, in the same words.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from smalto.errors import SmaltoError


@dataclass(frozen=True)
class Range:
    """A closed interval (low may be open), of integers or of finite real numbers; None is unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low, high = (None if x is None else f"{x}" if self.integer else f"{x:g}" for x in (self.low, self.high))
        if low is not None and high is not None:
            return f"{kind} in {'(' if self.low_open else '['}{low}, {high}]"
        if low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {low}"
        if high is not None:
            return f"{kind} <= {high}"
        return kind if self.integer else "a finite number"

    def contains(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def check(self, value, name: str):
        """`value` if it is in range, else a SmaltoError naming `name`."""
        if not self.contains(value):
            raise SmaltoError(f"{name} must be {self.describe()}, got {value!r}")
        return value

    def json_schema(self) -> dict:
        """The same bounds in JSON Schema words (what the HTTP API documents)."""
        schema: dict = {}
        if self.low is not None:
            schema["exclusiveMinimum" if self.low_open else "minimum"] = self.low
        if self.high is not None:
            schema["maximum"] = self.high
        return schema


MAX_SEED = 2**63 - 1

# Sampling and guidance, for drawing and for text. Temperature stops at 2 as in OpenAI's API:
# beyond it sampling is close to uniform noise.
SAMPLING = {
    "temperature": Range(0, 2),  # 0 is greedy
    "top_k": Range(0, integer=True),  # 0 keeps every token
    "top_p": Range(0, 1),  # 0 keeps only the most likely token: greedy
    "guidance": Range(0, 20),  # classifier-free guidance: 0 unconditional, 1 conditional only
    "seed": Range(0, MAX_SEED, integer=True),
    "beams": Range(1, 16, integer=True),
    "best_of": Range(1, 64, integer=True),  # candidates drawn, or answers voted
    "thinking_budget": Range(1, 128, integer=True),  # tokens between <think> and </think>
}


def check(name: str, value):
    """A sampling option's value if valid (None passes: "the default"), else a SmaltoError."""
    return value if value is None else SAMPLING[name].check(value, name)
