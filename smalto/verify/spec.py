"""Language -> constraints: ShapesWorld's phrasing read as a formal specification.

    spec = parse_prompt("a small green square left of a large blue circle")
    spec.things     # (Thing(shape='square', color='green', size='small'), Thing(shape='circle', ...))
    spec.relations  # (Relation(0, 'left of', 1),)
    q = parse_question("how many circles are there?")
    q.answer(scene)  # "2", computed from a scene graph

A drawing prompt describes a whole scene: objects with the attributes it names (the others are
free), absolute cells, relations between objects and an optional stated count. A question asks
for a count, an attribute, a place, existence or a relation. The grammar is ShapesWorld's own
phrasing (every caption template and question the world writes) plus the small variations a
person types ("to the left of", "colour", "two red circles", "the square" for one already named);
words outside it are named in a `SpecError`, never guessed.

What a specification means against a scene, and planning a scene for it, is `verify.smt`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from smalto.data.shapes import NUMBER_WORDS, PALETTE, PLURALS, POSITIONS, SHAPES, ShapesConfig, Obj, Scene
from smalto.errors import SmaltoError


class SpecError(SmaltoError):
    """Text outside the grammar: the message names the words not understood."""


SIZES = tuple(name for name, _ in ShapesConfig().sizes)
CELLS = {name: (r, c) for r, row in enumerate(POSITIONS) for c, name in enumerate(row)}
CELLS |= {"centre": (1, 1), "middle": (1, 1), "top center": (0, 1), "bottom center": (2, 1)}
NUMBERS = {w: i for i, w in enumerate(NUMBER_WORDS)} | {str(i): i for i in range(10)}
SINGULAR = {p: s for s, p in PLURALS.items()}
# Relation words -> the relation they name; "a left of b" holds when a's column is smaller.
RELATIONS = {
    "left of": "left of", "to the left of": "left of", "on the left of": "left of",
    "right of": "right of", "to the right of": "right of", "on the right of": "right of",
    "above": "above", "over": "above", "below": "below", "under": "below", "beneath": "below",
    "in the same row as": "same row as", "in the same column as": "same column as",
}


def holds(relation: str, a: Obj, b: Obj) -> bool:
    """Whether `a <relation> b` is true of two placed objects."""
    return {"left of": a.col < b.col, "right of": a.col > b.col, "above": a.row < b.row, "below": a.row > b.row,
            "same row as": a.row == b.row, "same column as": a.col == b.col}[relation]


@dataclass(frozen=True)
class Thing:
    """A described object: the attributes the words give (None where they say nothing)."""
    shape: str | None = None
    color: str | None = None
    size: str | None = None
    cell: tuple[int, int] | None = None
    words: str = field(default="", compare=False)  # the phrase it came from, for messages

    def matches(self, o: Obj) -> bool:
        return all(want is None or want == got for want, got in
                   ((self.shape, o.shape), (self.color, o.color), (self.size, o.size), (self.cell, (o.row, o.col))))

    def noun(self, plural: bool = False) -> str:
        """"small red circle", "red objects", "object at the center"."""
        shape = self.shape or "object"
        words = [w for w in (self.size, self.color) if w] + [PLURALS.get(shape, shape + "s") if plural else shape]
        if self.cell is not None:
            words.append(f"at the {POSITIONS[self.cell[0]][self.cell[1]]}")
        return " ".join(words)

    def attributes(self) -> dict[str, object]:
        return {k: v for k, v in (("shape", self.shape), ("color", self.color), ("size", self.size),
                                  ("cell", self.cell)) if v is not None}


@dataclass(frozen=True)
class Relation:
    a: int  # indices into Spec.things
    kind: str  # a value of RELATIONS
    b: int
    words: str = field(default="", compare=False)


@dataclass(frozen=True)
class Spec:
    """A scene as a drawing prompt describes it: exactly these objects (a stated count adds
    unnamed ones), each in its own cell, with these relations."""
    things: tuple[Thing, ...]
    relations: tuple[Relation, ...] = ()
    count: int | None = None  # "two objects: ...", when said
    count_words: str = field(default="", compare=False)
    text: str = field(default="", compare=False)


@dataclass(frozen=True)
class Question:
    """What a question asks: `kind` is count, color/shape/size (an attribute of `subject`), where,
    exists, or a relation between `subject` and `other`."""
    kind: str
    subject: Thing
    other: Thing | None = None
    text: str = field(default="", compare=False)

    def subjects(self) -> list[Thing]:
        return [self.subject] + ([self.other] if self.other is not None else [])

    def answer(self, scene: Scene) -> str:
        """The true answer about a scene, in the world's answer words (a count as digits, "yes",
        a colour, a position, "nothing" for an empty cell); a question that presupposes an object
        the scene lacks is answered "there is no <object>"."""
        if self.kind == "count":
            return str(sum(self.subject.matches(o) for o in scene.objects))
        if self.kind == "exists":
            return "yes" if any(self.subject.matches(o) for o in scene.objects) else "no"
        found = [self._one(t, scene) for t in self.subjects()]
        for thing, hit in zip(self.subjects(), found):
            if isinstance(hit, str):
                if self.kind == "shape" and thing.attributes().keys() == {"cell"} and hit.startswith("there is no"):
                    return "nothing"  # "what shape is at the center?" about an empty cell
                return hit
        a = found[0]
        if self.kind in ("color", "shape", "size"):
            return getattr(a, self.kind)
        if self.kind == "where":
            return a.position
        return "yes" if holds(self.kind, a, found[1]) else "no"

    def _one(self, thing: Thing, scene: Scene) -> Obj | str:
        hits = [o for o in scene.objects if thing.matches(o)]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            return f"there is no {thing.noun()}"
        return f"there are {NUMBER_WORDS[len(hits)]} {thing.noun(plural=True)}"

    def facts(self, scene: Scene) -> str:
        """What the question needs from a scene, in words ("circles: top left, center"): the
        middle part of a thinking trace."""
        parts = []
        for thing in self.subjects():
            if thing.cell is not None:
                o = scene.at(*thing.cell)
                parts.append(f"{POSITIONS[thing.cell[0]][thing.cell[1]]}: {o.phrase() if o else 'nothing'}")
                continue
            hits = [o for o in scene.objects if thing.matches(o)]
            where = ", ".join(o.position for o in hits) or "none"
            parts.append(f"{Thing(thing.shape, thing.color, thing.size).noun(plural=True)}: {where}")
        return "; ".join(parts)


# --- reading words

_TOKEN = re.compile(r"[a-z0-9]+|[,:;]")
_KNOWN = ({*SHAPES, *PLURALS.values(), *PALETTE, *SIZES, *NUMBERS, "colour", "color", "object", "objects", "thing",
           "things", "a", "an", "the", "single", "and", "at", "in", "on", "there", "is", "are", "which", "that", "of",
           "to", "as", "same", "row", "column", "how", "many", "what", "where", "image", "picture", "scene", "shape",
           "size", "with", ",", ":", ";"}
          | {w for phrase in [*CELLS, *RELATIONS] for w in phrase.split()})


def _words(text: str) -> list[str]:
    if not isinstance(text, str):
        raise SpecError(f"expected text, got {type(text).__name__}")
    cleaned = text.lower().strip().rstrip(".?!").replace("colour", "color")
    words = _TOKEN.findall(cleaned)
    unknown = sorted({w for w in re.findall(r"[^\s,:;.?!]+", cleaned) if w not in _KNOWN}, key=cleaned.find)
    if unknown:
        raise SpecError(f"words not understood in {text.strip()!r}: {', '.join(repr(w) for w in unknown)} "
                        f"(the ShapesWorld phrasing is described in docs/test-time.md)")
    if not words:
        raise SpecError("the text is empty")
    return words


class _Reader:
    """A cursor over the words, with the grammar's pieces as methods that consume on success."""

    def __init__(self, text: str):
        self.text, self.w, self.i = text, _words(text), 0

    def done(self) -> bool:
        return self.i >= len(self.w)

    def peek(self, k: int = 0) -> str | None:
        return self.w[self.i + k] if self.i + k < len(self.w) else None

    def take(self, *phrase: str) -> bool:
        """Consume these exact words, if they come next."""
        if self.w[self.i:self.i + len(phrase)] == list(phrase):
            self.i += len(phrase)
            return True
        return False

    def take_any(self, phrases) -> str | None:
        """The longest of the phrases that comes next, consumed."""
        for p in sorted(phrases, key=lambda p: -len(p.split())):
            if self.take(*p.split()):
                return p
        return None

    def fail(self, what: str):
        rest = " ".join(self.w[self.i:self.i + 4]) or "the end"
        raise SpecError(f"could not read {self.text.strip()!r}: expected {what} at {rest!r}")

    def span(self, start: int) -> str:
        return " ".join(self.w[start:self.i])

    def location(self) -> tuple[int, int] | None:
        """"at the top left" / "in the center"."""
        start = self.i
        if (self.take("at") or self.take("in") or self.take("on")) and self.take("the"):
            if (cell := self.take_any(CELLS)) is not None:
                return CELLS[cell]
        self.i = start
        return None

    def adjectives(self) -> dict[str, str]:
        """[size] [colour], in either order: {"size": ..., "color": ...}."""
        attrs: dict[str, str] = {}
        while self.peek() in SIZES or self.peek() in PALETTE:
            word = self.w[self.i]
            key = "size" if word in SIZES else "color"
            if key in attrs:
                raise SpecError(f"{self.text.strip()!r}: one object with two {key}s ({attrs[key]!r} and {word!r})")
            attrs[key] = word
            self.i += 1
        return attrs

    def noun_phrase(self, plural_ok: bool = True) -> tuple[list[Thing], bool] | None:
        """[a | an | the | one | a single | NUMBER] [size] [colour] shape|object(s) [location]:
        the things it names (several for "two red circles") and whether it was definite ("the")."""
        start = self.i
        definite = self.peek() == "the"
        number = 1
        if self.take("a", "single") or self.take("a") or self.take("an") or self.take("the") or self.take("single"):
            pass
        elif self.peek() in NUMBERS and plural_ok:
            number = NUMBERS[self.w[self.i]]
            self.i += 1
        attrs = self.adjectives()
        noun = self.peek()
        if noun in SHAPES or noun in ("object", "thing"):
            shape = noun if noun in SHAPES else None
            if number != 1:
                self.fail(f"a plural after {NUMBER_WORDS[number]!r}")
        elif noun in SINGULAR or noun in ("objects", "things"):
            shape = SINGULAR.get(noun)
            if number == 1 and self.i > start and self.w[start] in ("a", "an", "single", "one"):
                self.fail("a singular noun")
        else:
            self.i = start
            return None
        self.i += 1
        cell = self.location()
        words = self.span(start)
        return [Thing(shape, attrs.get("color"), attrs.get("size"), cell, words) for _ in range(number)], definite


# --- drawing prompts

def parse_prompt(text: str) -> Spec:
    """A drawing prompt -> its specification, or a SpecError naming what was not understood."""
    r = _Reader(text)
    things: list[Thing] = []
    relations: list[Relation] = []
    count = None
    count_words = ""

    def add(found: tuple[list[Thing], bool], allow_reference: bool) -> int:
        """Index of the (first) thing a noun phrase names: "the square" is one already named."""
        new, definite = found
        if allow_reference and definite and len(new) == 1:
            t = new[0]
            for k in range(len(things) - 1, -1, -1):
                old = things[k]
                if all(getattr(t, a) is None or getattr(t, a) == getattr(old, a) for a in ("shape", "color", "size")) \
                        and (t.cell is None or old.cell in (None, t.cell)):
                    if t.cell is not None:
                        things[k] = Thing(old.shape, old.color, old.size, t.cell, old.words)
                    return k
        things.extend(new)
        return len(things) - len(new)

    # "three objects: ..." or "three objects" alone
    start = r.i
    if r.peek() in NUMBERS and r.peek(1) in ("object", "objects", "things"):
        count, r.i = NUMBERS[r.peek()], r.i + 2
        count_words = r.span(start)
        r.take(":")
        if r.done():
            return Spec((), (), count, count_words, text)
    last = None
    while True:
        if r.take("in", "the"):  # "in the top left there is a small red circle"
            cell_words = r.take_any(CELLS)
            if cell_words is None or not (r.take("there", "is") or r.take("there", "are")):
                r.fail("'in the <position> there is ...'")
            found = r.noun_phrase() or r.fail("an object")
            found[0][:] = [Thing(t.shape, t.color, t.size, CELLS[cell_words], f"in the {cell_words} there is {t.words}")
                           for t in found[0]]
            last = add(found, allow_reference=False)
        elif r.take("which", "is") or r.take("that", "is"):  # "..., which is above a small green triangle"
            if last is None:
                r.fail("an object before 'which is'")
            last = _relation(r, last, things, relations, add)
        else:
            found = r.noun_phrase() or r.fail("an object such as 'a small red circle'")
            last = add(found, allow_reference=bool(things))
            while (nxt := _relation(r, last, things, relations, add, optional=True)) is not None:
                last = nxt
        if r.done():
            break
        if not (r.take(",", "and") or r.take(",") or r.take("and") or r.take(";")):
            r.fail("',' or 'and'")
    return Spec(tuple(things), tuple(relations), count, count_words, text)


def _relation(r: _Reader, a: int, things: list, relations: list, add, optional: bool = False) -> int | None:
    """`<relation> <noun phrase>` after object a: records the relation, returns the new object's index."""
    start = r.i
    r.take("is")
    words = r.take_any(RELATIONS)
    if words is None:
        r.i = start
        return None if optional else r.fail("a relation such as 'left of' or 'above'")
    found = r.noun_phrase(plural_ok=False) or r.fail("an object after " + repr(words))
    b = add(found, allow_reference=True)
    if a == b:
        raise SpecError(f"{r.text.strip()!r}: {things[a].words!r} cannot be {words} itself")
    relations.append(Relation(a, RELATIONS[words], b, f"{things[a].words} {words} {found[0][0].words}"))
    return b


# --- questions

def parse_question(text: str) -> Question:
    """A question about a scene -> what it asks, or a SpecError."""
    r = _Reader(text)

    def subject(plural_ok: bool = False) -> Thing:
        found = r.noun_phrase(plural_ok) or r.fail("an object such as 'the red circle'")
        return found[0][0]

    def end(q: Question) -> Question:
        r.take("in", "the", "image") or r.take("in", "the", "picture") or r.take("in", "the", "scene")
        if not r.done():
            r.fail("the end of the question")
        return q

    if r.take("how", "many"):  # how many [size] [colour] shapes|objects are there
        start = r.i
        attrs = r.adjectives()
        noun = r.take_any((*SINGULAR, "objects", "things")) or r.fail("a plural such as 'circles' or 'objects'")
        thing = Thing(SINGULAR.get(noun), attrs.get("color"), attrs.get("size"), r.location(), r.span(start))
        if not r.take("are", "there"):
            r.fail("'are there'")
        return end(Question("count", thing, text=text))
    if r.take("what"):  # what color|size|shape is (the <object> | at the <position>)
        kind = r.take_any(("color", "size", "shape")) or r.fail("'color', 'size' or 'shape'")
        r.take("is") or r.fail("'is'")
        cell = r.location()
        thing = Thing(cell=cell, words=f"the object at the {POSITIONS[cell[0]][cell[1]]}") if cell else subject()
        return end(Question(kind, thing, text=text))
    if r.take("where", "is"):
        return end(Question("where", subject(), text=text))
    if r.take("is", "there") or r.take("are", "there"):
        return end(Question("exists", subject(), text=text))
    if r.take("is"):  # is the <object> <relation> the <object>
        a = subject()
        words = r.take_any(RELATIONS) or r.fail("a relation such as 'left of'")
        return end(Question(RELATIONS[words], a, subject(), text=text))
    r.fail("a question starting 'how many', 'what', 'where is', 'is there' or 'is the'")


__all__ = ["CELLS", "Question", "Relation", "Spec", "SpecError", "Thing", "holds",
           "parse_prompt", "parse_question"]
