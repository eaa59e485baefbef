"""Token ids in, text out, as they are decoded: the one detokenizer of the pipeline, the server
and the terminal."""

from __future__ import annotations

from smalto.tokenizers.text import TextTokenizer

class Detokenizer:
    """Token ids in, text out, one token at a time: one reply.

    Emits only text that is final: never half of a multi-byte character, never the beginning of
    what may turn into a stop string, never trailing whitespace (the reply is stripped). The
    reply ends at <eos> (`eos`), at the first stop string (cut before it), or at `limit` tokens;
    `finish_reason` then says which, in OpenAI's words: "stop" or "length".
    """

    def __init__(self, tokenizer: TextTokenizer, stop: list[str] | tuple[str, ...] = (), eos: int | None = None,
                 limit: int | None = None):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.eos, self.limit = eos, limit
        self.ids: list[int] = []
        self.count = 0  # tokens pushed, <eos> included
        self.emitted = 0  # characters of the decoded text already handed out
        self.finish_reason: str | None = None

    @property
    def stopped(self) -> bool:
        """A stop string or <eos> ended the reply."""
        return self.finish_reason == "stop"

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids).lstrip()

    def push(self, token: int) -> str:
        """Add one token; return the text that became final (all the rest when the reply ends)."""
        if self.finish_reason is not None:
            return ""
        self.count += 1
        if token == self.eos:
            return self.finish("stop")
        self.ids.append(token)
        text = self._text()
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.finish_reason = "stop"
            return self._take(text, cut)
        if self.limit is not None and self.count >= self.limit:
            return self.finish("length")
        # Hold back the tail that may still change: trailing whitespace (the reply is stripped at
        # the end) and "\ufffd", half a character (which may complete into whitespace).
        hold = len(text) - len(text.rstrip("\ufffd").rstrip())
        for s in self.stop:  # the longest tail that could still grow into a stop string
            hold = max(hold, next((k for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])), 0))
        return self._take(text, len(text) - hold)

    def finish(self, reason: str = "length") -> str:
        """End the reply (no token will follow): the text held back."""
        if self.finish_reason is not None:
            return ""
        self.finish_reason = reason
        return self._take(self._text().rstrip(), None)

    def _take(self, text: str, end: int | None) -> str:
        end = len(text) if end is None else max(end, self.emitted)
        out, self.emitted = text[self.emitted:end], end
        return out


def detokenize(tokenizer: TextTokenizer, tokens: list[int], eos: int | None = None) -> str:
    """A whole reply's text at once (what streaming it would have given)."""
    d = Detokenizer(tokenizer, eos=eos)
    return "".join(d.push(t) for t in tokens) + d.finish()
