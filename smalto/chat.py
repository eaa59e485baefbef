"""Chat: a conversation of messages (text and images) in, a streamed text reply out.

The model knows two roles, user and assistant (see `sequence.chat_prompt`); it was never taught
a system prompt, so system messages are accepted and left out of the prompt. Replies are text
only: a chat turn never draws (drawing is `Pipeline.generate_image`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smalto.tokenizers.text import TextTokenizer

ROLES = ("system", "developer", "user", "assistant")


@dataclass
class Message:
    role: str  # one of ROLES
    text: str = ""
    images: list = field(default_factory=list)  # paths, PIL images or uint8 arrays (user turns only)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")


class TextStream:
    """Token ids in, text out, one token at a time.

    Emits only text that is final: never half of a multi-byte character, never the beginning of
    what may turn into a stop string, never trailing whitespace (the reply is stripped). At the
    first stop string the text is cut before it and `stopped` is set.
    """

    def __init__(self, tokenizer: TextTokenizer, stop: list[str] | tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.emitted = 0  # characters of the decoded text already handed out
        self.stopped = False

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids).lstrip()

    def push(self, token: int) -> str:
        """Add one token; return the text that became final."""
        if self.stopped:
            return ""
        self.ids.append(token)
        text = self._text()
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._take(text, cut)
        # Hold back the tail that may still change: trailing whitespace (the reply is stripped at
        # the end) and "\ufffd", half a character (which may complete into whitespace).
        hold = len(text) - len(text.rstrip("\ufffd").rstrip())
        for s in self.stop:  # the longest tail that could still grow into a stop string
            hold = max(hold, next((k for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])), 0))
        return self._take(text, len(text) - hold)

    def finish(self) -> str:
        """The text held back, once no token will follow."""
        return "" if self.stopped else self._take(self._text().rstrip(), None)

    def _take(self, text: str, end: int | None) -> str:
        end = len(text) if end is None else max(end, self.emitted)
        out, self.emitted = text[self.emitted:end], end
        return out
