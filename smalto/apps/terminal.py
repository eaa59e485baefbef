"""`smalto chat`: talk to a local model in the terminal, no server needed.

Plain lines are chat turns (replies stream as they are decoded); `/image PATH` starts a
conversation about an image, `/draw PROMPT` draws and saves images, `/effort LEVEL` sets the
test-time compute of both (thinking is shown dimmed before the answer). On a colour terminal,
images are previewed inline with half-block characters (two pixels per character cell).
"""

from __future__ import annotations

import itertools
import shlex
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from smalto.pipeline import Message
from smalto.data.images import load_image
from smalto.data.video import is_clip
from smalto.effort import effort_level
from smalto.inference import Sampling
from smalto.errors import ContextLengthError, SmaltoError
from smalto.options import Range
from smalto.pipeline import Pipeline
from smalto.plots import save_png

HELP = """\
  any text         ask (about the attached image, if any); Enter alone captions it
  /image PATH      start a new conversation about an image (or a clip: an animated GIF/WebP)
  /draw PROMPT     draw and save images; options: --n N (1-16), --seed S, --guidance G
  /effort LEVEL    none, low, medium or high: thinking and votes for answers, best-of-N for drawings
  /new             start a new conversation
  /help            this list
  /quit            leave (Ctrl-D works too)"""


def preview(images: list[np.ndarray]) -> str:
    """Images side by side as 24-bit colour half blocks: the upper pixel is the glyph, the lower its background."""
    lines = []
    for y in range(0, images[0].shape[0] - 1, 2):
        cells = []
        for img in images:
            cells.append("".join(f"\x1b[38;2;{a[0]};{a[1]};{a[2]}m\x1b[48;2;{b[0]};{b[1]};{b[2]}m▀"
                                 for a, b in zip(img[y], img[y + 1])) + "\x1b[0m")
        lines.append("  " + "  ".join(cells))
    return "\n".join(lines)


class TerminalChat:
    def __init__(self, pipe: Pipeline, out: Path, sampling: Sampling = Sampling(), show_images: bool = False,
                 stdout: TextIO = sys.stdout):
        self.pipe, self.out, self.sampling, self.show_images, self.stdout = pipe, out, sampling, show_images, stdout
        self.messages: list[Message] = []
        self.image: np.ndarray | None = None  # of the current conversation
        self.image_name = ""
        self.color = show_images
        self.effort = "none"

    def say(self, text: str = "", end: str = "\n") -> None:
        self.stdout.write(text + end)
        self.stdout.flush()

    def note(self, text: str) -> None:
        self.say(f"\x1b[2m{text}\x1b[0m" if self.color else text)

    def run(self, lines) -> None:
        size = self.pipe.image_size
        self.note(f"smalto chat · {self.pipe.name} · {size}×{size} images · "
                  f"/help lists commands")
        for line in lines:
            line = line.strip()
            if line.startswith("/"):
                if not self.command(line):
                    return
            else:
                self.turn(line)

    def command(self, line: str) -> bool:
        """Run a /command; False means quit."""
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        try:
            if name in ("/quit", "/exit"):
                return False
            elif name == "/help":
                self.say(HELP)
            elif name in ("/new", "/reset"):
                self.messages, self.image = [], None
                self.note("new conversation")
            elif name == "/image":
                self.attach(rest)
            elif name == "/draw":
                self.draw(rest)
            elif name == "/effort":
                self.effort = effort_level(rest or None).name
                self.note(f"effort: {self.effort}")
            else:
                self.note(f"unknown command {name}; /help lists them")
        except SmaltoError as e:
            self.say(f"error: {e}")
        return True

    def attach(self, path: str) -> None:
        if not path:
            raise SmaltoError("give an image file: /image PATH")
        path = Path(path.strip("'\"")).expanduser()
        if is_clip(path):  # an animated GIF/WebP or a folder of frames (a model trained on clips)
            self.image = self.pipe.check_clips([path])[0]
        else:
            self.image = load_image(path, self.pipe.image_size, self.pipe.max_image_pixels)
        self.image_name = path.name
        self.messages = []
        if self.show_images:
            self.say(preview(list(self.image) if self.image.ndim == 4 else [self.image]))
        self.note(f"new conversation about {self.image_name}: ask a question, or press Enter for a caption")

    def turn(self, text: str) -> None:
        if not text and self.image is None:
            return
        first = not self.messages and self.image is not None
        self.messages.append(Message("user", text, [self.image] if first else []))
        try:
            self.reply()
        except SmaltoError as e:
            self.messages.pop()
            if not isinstance(e, ContextLengthError) or self.image is None:
                self.say(f"error: {e}")
                return
            self.note("(the context is full: earlier turns are forgotten)")
            self.messages = [Message("user", text, [self.image])]
            self.reply()

    def reply(self) -> None:
        if self.effort == "none":
            events = (("content", piece) for piece in self.pipe.chat_stream(self.messages, sampling=self.sampling))
        else:
            events = self.pipe.chat_events(self.messages, effort=self.effort)
        first = next(events, ("content", ""))  # a bad conversation raises here, before anything is printed
        self.say("\x1b[1msmalto ›\x1b[0m " if self.color else "smalto › ", end="")
        text, thinking = "", False
        for kind, value in itertools.chain([first], events):
            if kind == "reasoning" and value:
                if not thinking:
                    self.say("\x1b[2m(thinking) " if self.color else "(thinking) ", end="")
                    thinking = True
                self.say(value, end="")
            elif kind == "content":
                if thinking:
                    self.say("\x1b[0m\n  " if self.color else "\n  ", end="")
                    thinking = False
                text += value
                self.say(value, end="")
        self.say()
        self.messages.append(Message("assistant", text))

    def draw(self, args: str) -> None:
        words, options = [], {"--n": "4", "--seed": None, "--guidance": None}
        try:
            tokens = iter(shlex.split(args))
        except ValueError as e:
            raise SmaltoError(f"could not read the /draw line ({e})") from None
        for word in tokens:
            if word in options:
                options[word] = next(tokens, None)
                if options[word] is None:
                    raise SmaltoError(f"{word} needs a value")
            else:
                words.append(word)
        try:
            n = int(options["--n"])
            seed = int(options["--seed"]) if options["--seed"] is not None else None
            guidance = float(options["--guidance"]) if options["--guidance"] is not None else None
        except ValueError:
            raise SmaltoError("--n and --seed take whole numbers, --guidance a number") from None
        Range(1, 16, integer=True).check(n, "--n")  # seed and guidance: checked by the pipeline
        prompt = " ".join(words)
        drawings = self.pipe.drawings(prompt, n=n, effort=self.effort, seed=seed, guidance=guidance)
        images = [d.image for d in drawings]
        if drawings[0].note:
            self.note(drawings[0].note)
        for i, d in enumerate(drawings):  # what came out, as the verifier reads it
            verdict = "" if d.verdict is None else ("; matches the prompt" if d.verdict.satisfied else
                                                    "; still fails: " + "; ".join(d.verdict.failed))
            if d.reading or verdict:
                self.note(f"#{i + 1}: " + (f"reads {d.reading!r}" if d.reading else "") + verdict)
        self.out.mkdir(parents=True, exist_ok=True)
        start = max((int(p.stem[5:]) for p in self.out.glob("draw-*.png") if p.stem[5:].isdigit()), default=0)
        paths = []
        for i, image in enumerate(images):
            path = self.out / f"draw-{start + i + 1:04d}.png"  # never overwrites an earlier drawing
            save_png(path, image)
            paths.append(path)
        if self.show_images:
            self.say(preview(images))
        self.note(f"saved {paths[0]}" + (f" … {paths[-1].name}" if len(paths) > 1 else ""))


def lines_from(stream: TextIO, prompt: str):
    """Input lines; with a terminal, read with line editing and a prompt."""
    if stream.isatty():
        try:
            import readline  # noqa: F401  (arrow keys and history for input())
        except ImportError:
            pass
        while True:
            try:
                yield input(prompt)
            except EOFError:
                print()
                return
            except KeyboardInterrupt:
                print()
                return
    else:
        yield from stream


def run_terminal_chat(pipe: Pipeline, out: Path, sampling: Sampling = Sampling(), preview_images: str = "auto") -> None:
    show = sys.stdout.isatty() if preview_images == "auto" else preview_images == "always"
    chat = TerminalChat(pipe, out, sampling, show)
    chat.run(lines_from(sys.stdin, "\x1b[1myou ›\x1b[0m " if sys.stdout.isatty() else "you › "))
