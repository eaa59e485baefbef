"""ShapesWorld: a procedural world whose ground truth we know.

A scene is 1-4 coloured shapes on a plain background, each in its own cell of a 3x3 grid. From
a seed we get the scene graph, its image, captions in several phrasings and question-answer
pairs, so every caption, answer or generated image can later be checked by a program
(`smalto.verify.scene`) instead of by eye.

A set of (colour, shape) pairs is held out: training scenes never contain them, so a model's
generalisation to unseen compositions can be measured on the "heldout" split. And a share of the
scenes made of training pairs is reserved by rule (`is_reserved`: a hash of the scene graph), so
that no model trained on the "train" split, whatever its seed or length, ever sees the "unseen"
split: scenes of familiar compositions that are new as wholes. One- and two-object scenes are
few (270 and 32,400 in the default world), so without the reserve a long run sees nearly all.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import numpy as np

from smalto.errors import SmaltoError

GRID = 3  # the 3x3 layout is baked into the position words below

# Well separated in RGB from each other and from the background, so the verifier can segment
# by colour even after a decoder's blur. The first six are the default palette.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 210),
    "cyan": (40, 210, 220),
    "white": (240, 240, 240),
    "orange": (250, 140, 30),
}
BACKGROUND = (24, 24, 24)

POSITIONS = (
    ("top left", "top middle", "top right"),
    ("middle left", "center", "middle right"),
    ("bottom left", "bottom middle", "bottom right"),
)
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# --- shapes: each is a predicate over pixel-centre coordinates relative to the object's
# centre, for an object whose bounding box is `side` wide. Adding a shape = adding a function.

def _circle(dx: np.ndarray, dy: np.ndarray, side: float) -> np.ndarray:
    return dx**2 + dy**2 <= (side / 2) ** 2


def _square(dx: np.ndarray, dy: np.ndarray, side: float) -> np.ndarray:
    return (np.abs(dx) <= side / 2) & (np.abs(dy) <= side / 2)


def _triangle(dx: np.ndarray, dy: np.ndarray, side: float) -> np.ndarray:
    # Apex up, base at the bottom of the box: the half-width grows linearly from 0 to side/2.
    t = (dy + side / 2) / side
    return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * side / 2)


def _diamond(dx: np.ndarray, dy: np.ndarray, side: float) -> np.ndarray:
    return np.abs(dx) + np.abs(dy) <= side / 2


SHAPES: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "diamond": _diamond,  # only in the "shapes-plus" world: what fine-tuning adapts to
}
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds"}


@dataclass(frozen=True)
class ShapesConfig:
    image_size: int = 32
    min_objects: int = 1
    max_objects: int = 3
    shapes: tuple[str, ...] = ("circle", "square", "triangle")
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "cyan")
    # Object side as a fraction of the cell side.
    sizes: tuple[tuple[str, float], ...] = (("small", 0.5), ("large", 0.75))
    # (colour, shape) pairs that never appear in the "train" split.
    heldout: tuple[tuple[str, str], ...] = (("red", "triangle"), ("green", "square"), ("blue", "circle"))
    # Largest random offset of an object from its cell centre, in pixels.
    jitter: float = 0.0
    # One in `reserve` scenes of training pairs is kept out of the "train" split for the "unseen"
    # one (0: none, the world the shipped v3 and the models before it were trained on).
    reserve: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= 4:
            raise SmaltoError(f"ShapesConfig: need 1 <= min_objects <= max_objects <= 4, "
                              f"got {self.min_objects}..{self.max_objects}")
        if self.reserve < 0 or self.reserve == 1:
            raise SmaltoError(f"ShapesConfig: reserve must be 0 (none) or >= 2, got {self.reserve}")
        if self.image_size < 12:
            raise SmaltoError(f"ShapesConfig: image_size must be >= 12, got {self.image_size}")
        for name in self.shapes:
            if name not in SHAPES:
                raise SmaltoError(f"ShapesConfig: unknown shape {name!r} (known: {', '.join(SHAPES)})")
        for name in self.colors:
            if name not in PALETTE:
                raise SmaltoError(f"ShapesConfig: unknown colour {name!r} (known: {', '.join(PALETTE)})")
        for color, shape in self.heldout:
            if color not in self.colors or shape not in self.shapes:
                raise SmaltoError(f"ShapesConfig: held-out pair ({color}, {shape}) is not in the world")

    @property
    def new_words(self) -> set[str]:
        """Shapes and colours beyond the default world's (what a fine-tuned model has to learn)."""
        default = ShapesConfig()
        return (set(self.shapes) - set(default.shapes)) | (set(self.colors) - set(default.colors))

    @property
    def cell(self) -> float:
        return self.image_size / GRID

    def side(self, size: str) -> float:
        return dict(self.sizes)[size] * self.cell

    @property
    def size_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.sizes)

    def pairs(self, split: str) -> list[tuple[str, str]]:
        """(colour, shape) pairs allowed in a split."""
        every = [(c, s) for c in self.colors for s in self.shapes]
        if split in ("train", "unseen"):
            return [p for p in every if p not in self.heldout]
        if split == "heldout":
            return list(self.heldout)
        return every


@dataclass(frozen=True, order=True)
class Obj:
    row: int
    col: int
    shape: str
    color: str
    size: str

    @property
    def position(self) -> str:
        return POSITIONS[self.row][self.col]

    def phrase(self, with_size: bool = True) -> str:
        return f"{self.size} {self.color} {self.shape}" if with_size else f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    # Sub-pixel offsets of each object from its cell centre (only with jitter); not part of
    # the scene's identity, which is what the verifier can recover.
    offsets: tuple[tuple[float, float], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(sorted(self.objects)))

    def to_dict(self) -> dict:
        return {"objects": [{"shape": o.shape, "color": o.color, "size": o.size,
                             "row": o.row, "col": o.col} for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        """Raises ValueError (or KeyError/TypeError) unless d is a well-formed scene graph."""
        objects = []
        for o in d["objects"]:
            obj = Obj(int(o["row"]), int(o["col"]), str(o["shape"]), str(o["color"]), str(o["size"]))
            if not (0 <= obj.row < GRID and 0 <= obj.col < GRID):
                raise ValueError(f"cell ({obj.row}, {obj.col}) is outside the {GRID}x{GRID} grid")
            if obj.shape not in SHAPES or obj.color not in PALETTE:
                raise ValueError(f"unknown shape or colour in {o}")
            objects.append(obj)
        return cls(tuple(objects))

    def count(self, shape: str | None = None, color: str | None = None) -> int:
        return sum((shape is None or o.shape == shape) and (color is None or o.color == color)
                   for o in self.objects)

    def at(self, row: int, col: int) -> Obj | None:
        return next((o for o in self.objects if (o.row, o.col) == (row, col)), None)


def scene_key(scene: Scene) -> str:
    """A scene's identity as text: its objects in canonical order (offsets are not part of it)."""
    return ";".join(f"{o.row}{o.col} {o.size} {o.color} {o.shape}" for o in scene.objects)


def is_reserved(scene: Scene, reserve: int) -> bool:
    """Whether the rule keeps this scene out of training: one in `reserve` scene graphs, chosen by
    hash, so the same scenes for every seed, run and model (never with reserve 0)."""
    if not reserve:
        return False
    digest = hashlib.blake2b(scene_key(scene).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % reserve == 0


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # uint8 [H, W, 3]
    scene: Scene
    captions: list[str]  # captions[0] is the canonical one that parse_caption reads back
    qa: list[dict]  # {"q", "a", "type"}


# --- sampling and rendering

def sample_scene(cfg: ShapesConfig, rng: np.random.Generator, split: str = "train") -> Scene:
    """A scene of the split: "train" (training pairs, not reserved), "unseen" (training pairs,
    reserved), "heldout" (at least one held-out pair) or "all"."""
    if split not in ShapesWorld.SPLITS:
        raise ValueError(f"unknown split {split!r}")
    if split == "unseen" and not cfg.reserve:
        raise SmaltoError("a world with reserve=0 keeps no scenes out of training: it has no unseen split")
    if split in ("train", "unseen"):  # drawn again until on the split's side of the reserve
        while True:
            scene = _draw_scene(cfg, rng, "train")
            if not cfg.reserve or is_reserved(scene, cfg.reserve) == (split == "unseen"):
                return scene
    return _draw_scene(cfg, rng, split)


def _draw_scene(cfg: ShapesConfig, rng: np.random.Generator, split: str) -> Scene:
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    allowed = cfg.pairs("all" if split == "heldout" else split)
    objects, offsets = [], []
    for i, cell in enumerate(cells):
        # A held-out scene shows at least one held-out pair; the rest are unrestricted.
        pairs = cfg.pairs("heldout") if split == "heldout" and i == 0 else allowed
        color, shape = pairs[rng.integers(len(pairs))]
        size = cfg.size_names[rng.integers(len(cfg.sizes))]
        objects.append(Obj(int(cell) // GRID, int(cell) % GRID, shape, color, size))
        offsets.append(tuple(rng.uniform(-cfg.jitter, cfg.jitter, 2)) if cfg.jitter else (0.0, 0.0))
    order = sorted(range(n), key=lambda k: objects[k])
    return Scene(tuple(objects[k] for k in order), tuple(offsets[k] for k in order))


def shape_mask(shape: str, cx: float, cy: float, side: float, height: int, width: int,
               supersample: int = 1) -> np.ndarray:
    """Coverage of a shape on the pixel grid: bool at supersample=1, else a float in [0, 1]."""
    s = supersample
    ys = (np.arange(height * s) + 0.5) / s
    xs = (np.arange(width * s) + 0.5) / s
    mask = SHAPES[shape](xs[None, :] - cx, ys[:, None] - cy, side)
    if s == 1:
        return mask
    return mask.reshape(height, s, width, s).mean(axis=(1, 3))


def render(scene: Scene, cfg: ShapesConfig) -> np.ndarray:
    """Crisp pixels (no anti-aliasing), so every pixel is exactly a palette colour."""
    size = cfg.image_size
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    offsets = scene.offsets or [(0.0, 0.0)] * len(scene.objects)
    for obj, (ox, oy) in zip(scene.objects, offsets):
        cx, cy = (obj.col + 0.5) * cfg.cell + ox, (obj.row + 0.5) * cfg.cell + oy
        image[shape_mask(obj.shape, cx, cy, cfg.side(obj.size), size, size)] = PALETTE[obj.color]
    return image


# --- language

def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _relation(a: Obj, b: Obj) -> str:
    if a.col != b.col:
        return "left of" if a.col < b.col else "right of"
    return "above" if a.row < b.row else "below"


def cell_words(scene: Scene) -> list[str]:
    """What each cell holds, cells in raster order: its number, then the object's "size colour
    shape" or "---" for an empty cell ("1---", "2 small red circle", ...). The words a drawing
    in the cells layout writes before each cell's codes (format.Modality.blocks)."""
    return [f"{k + 1}" + (f" {o.phrase()}" if (o := scene.at(k // GRID, k % GRID)) else "---")
            for k in range(GRID * GRID)]


def cell_patches(cfg: ShapesConfig, grid: int) -> tuple[tuple[int, ...], ...]:
    """For each cell (raster order), the raster indices of the patches of a grid x grid lattice
    (an image tokenizer's codes) whose centres lie in it: an object without jitter covers only
    patches of its own cell."""
    cell = [int((k + 0.5) * cfg.image_size / grid // cfg.cell) for k in range(grid)]  # a patch row's (column's)
    return tuple(tuple(r * grid + c for r in range(grid) for c in range(grid) if (cell[r], cell[c]) == (row, col))
                 for row in range(GRID) for col in range(GRID))


def captions(scene: Scene) -> list[str]:
    """Paraphrases of one scene; the first is canonical (complete and parseable)."""
    objs = scene.objects
    positional = _join([f"a {o.phrase()} at the {o.position}" for o in objs])
    counted = f"{NUMBER_WORDS[len(objs)]} object{'s' if len(objs) > 1 else ''}: " + _join(
        [f"a {o.phrase()} in the {o.position}" for o in objs])
    located = _join([f"in the {o.position} there is a {o.phrase()}" for o in objs])
    if len(objs) == 1:
        relational = f"a single {objs[0].phrase()} at the {objs[0].position}"
    else:
        relational = f"a {objs[0].phrase()} {_relation(objs[0], objs[1])} a {objs[1].phrase()}"
        for prev, o in zip(objs[1:], objs[2:]):
            relational += f", which is {_relation(prev, o)} a {o.phrase()}"
    return [positional, counted, located, relational]


_POSITION_INDEX = {name: (r, c) for r, row in enumerate(POSITIONS) for c, name in enumerate(row)}
_OBJECT = r"a (\w+) (\w+) (\w+) at the (" + "|".join(_POSITION_INDEX) + r")"
_OBJECT_PATTERN = re.compile(_OBJECT)
_CAPTION_PATTERN = re.compile(rf"{_OBJECT}(?:(?:, | and ){_OBJECT})*")


def parse_caption(text: str) -> Scene | None:
    """The scene a canonical caption describes ("a small red circle at the top left and a ..."),
    or None unless the whole text is one: any word outside the grammar makes it no caption."""
    text = text.strip().lower()
    if _CAPTION_PATTERN.fullmatch(text) is None or text.count(" and ") > 1 or ", " in text.split(" and ")[-1]:
        return None
    objs = []
    for size, color, shape, position in _OBJECT_PATTERN.findall(text):
        row, col = _POSITION_INDEX[position]
        objs.append(Obj(row, col, shape, color, size))
    return Scene(tuple(objs))


def questions(scene: Scene, cfg: ShapesConfig, rng: np.random.Generator,
              split: str = "train") -> list[dict]:
    """One question of each applicable type, answers as short words."""
    objs = scene.objects
    qa: list[dict] = []

    def add(kind: str, q: str, a: str | int) -> None:
        qa.append({"q": q, "a": str(a), "type": kind})

    def pick(seq):
        return seq[rng.integers(len(seq))]

    add("count", "how many objects are there?", len(objs))
    shape = pick(cfg.shapes)
    add("count", f"how many {PLURALS.get(shape, shape + 's')} are there?", scene.count(shape=shape))
    color = pick(cfg.colors)
    add("count", f"how many {color} objects are there?", scene.count(color=color))

    o = pick(objs)
    add("color", f"what color is the {o.shape} at the {o.position}?", o.color)
    add("size", f"what size is the {o.color} {o.shape} at the {o.position}?", o.size)

    empty = [(r, c) for r in range(GRID) for c in range(GRID) if scene.at(r, c) is None]
    if empty and rng.random() < 0.25:
        r, c = pick(empty)
        add("shape", f"what shape is at the {POSITIONS[r][c]}?", "nothing")
    else:
        o = pick(objs)
        add("shape", f"what shape is at the {o.position}?", o.shape)

    # Balanced yes/no; a "no" never names a pair the split must not show.
    present = {(x.color, x.shape) for x in objs}
    absent = [p for p in cfg.pairs(split) if p not in present]
    if rng.random() < 0.5 or not absent:
        o = pick(objs)
        add("exists", f"is there a {o.color} {o.shape}?", "yes")
    else:
        c, s = pick(absent)
        add("exists", f"is there a {c} {s}?", "no")

    unique = [x for x in objs if scene.count(x.shape, x.color) == 1]
    if unique:
        o = pick(unique)
        add("where", f"where is the {o.color} {o.shape}?", o.position)
    if len(unique) >= 2:
        i, j = rng.choice(len(unique), size=2, replace=False)
        a, b = unique[i], unique[j]
        if rng.random() < 0.5:
            add("left_of", f"is the {a.color} {a.shape} left of the {b.color} {b.shape}?",
                "yes" if a.col < b.col else "no")
        else:
            add("above", f"is the {a.color} {a.shape} above the {b.color} {b.shape}?",
                "yes" if a.row < b.row else "no")
    return qa


def premise_question(scene: Scene, cfg: ShapesConfig, rng: np.random.Generator, split: str = "train") -> dict:
    """A question that names an object without its place. Half the time the scene lacks it (a
    false premise: "what color is the square?" with no square is answered "there is no square"),
    else the scene has exactly one (answered as usual), so that "there is no" is earned."""
    def pick(seq):
        return seq[rng.integers(len(seq))]

    present = {(o.color, o.shape) for o in scene.objects}
    lacking = [s for s in cfg.shapes if scene.count(shape=s) == 0]
    absent = [p for p in cfg.pairs(split) if p not in present]
    unique = [o for o in scene.objects if scene.count(o.shape, o.color) == 1]
    if (rng.random() < 0.5 or not unique) and (lacking or absent):
        if lacking and (not absent or rng.random() < 0.5):
            shape = pick(lacking)
            return {"q": f"what color is the {shape}?", "a": f"there is no {shape}", "type": "false_premise"}
        color, shape = pick(absent)
        form = "what size is" if rng.random() < 0.5 else "where is"
        return {"q": f"{form} the {color} {shape}?", "a": f"there is no {color} {shape}", "type": "false_premise"}
    alone = [o for o in scene.objects if scene.count(shape=o.shape) == 1]
    if alone and rng.random() < 0.5:
        o = pick(alone)
        return {"q": f"what color is the {o.shape}?", "a": o.color, "type": "premise"}
    o = pick(unique)
    return {"q": f"what size is the {o.color} {o.shape}?", "a": o.size, "type": "premise"}


# Named worlds: what `--data` accepts besides a folder. "shapes-plus" adds a shape and a colour the
# shipped model never saw (a task to fine-tune on); the image tokenizer was not trained on them
# either, so it reconstructs them less exactly (docs/post-training.md measures by how much).
WORLDS: dict[str, ShapesConfig] = {
    "shapes": ShapesConfig(),
    "shapes-plus": ShapesConfig(shapes=("circle", "square", "triangle", "diamond"),
                                colors=("red", "green", "blue", "yellow", "purple", "cyan", "orange")),
}


def world_config(data: str, image_size: int = 32) -> ShapesConfig | None:
    """The ShapesWorld a training `data` value names, at this image size; None for a folder."""
    return replace(WORLDS[data], image_size=image_size) if data in WORLDS else None


# --- the world as an indexable, endless stream

class ShapesWorld:
    """Scene `i` of a world is a pure function of (seed, split, i): streams can be resumed,
    sharded and reproduced without touching disk."""

    SPLITS = ("train", "heldout", "all", "unseen")

    def __init__(self, cfg: ShapesConfig | None = None, seed: int = 0, split: str = "train"):
        if split not in self.SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {self.SPLITS}")
        if seed < 0:
            raise SmaltoError(f"seed must be >= 0, got {seed}")
        self.cfg = cfg or ShapesConfig()
        self.seed = seed
        self.split = split

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.SPLITS.index(self.split), index])

    def scene(self, index: int) -> Scene:
        return sample_scene(self.cfg, self.rng(index), self.split)

    def __getitem__(self, index: int) -> Sample:
        rng = self.rng(index)
        scene = sample_scene(self.cfg, rng, self.split)
        return Sample(render(scene, self.cfg), scene, captions(scene),
                      questions(scene, self.cfg, rng, self.split))

    def __iter__(self) -> Iterator[Sample]:
        i = 0
        while True:
            yield self[i]
            i += 1

    def images(self, start: int, count: int) -> np.ndarray:
        """uint8 [count, H, W, 3], rendered on the fly."""
        return np.stack([render(self.scene(i), self.cfg) for i in range(start, start + count)])
