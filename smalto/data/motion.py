"""ShapesWorld in motion: clips whose every frame is a ShapesWorld picture and whose motion we know.

A clip is `frames` frames (default 7) of 1-3 objects, each moving at a constant velocity and
bouncing off the border. Positions live on a lattice of half-cells, 5 x 5 points: even points
are the centres of the 3x3 grid's cells, odd points the borders between them. An object starts
at a cell's centre and moves half a cell ("slowly") or a whole cell ("fast") per frame along one
of 8 directions, or stays. The number of frames is odd, so every object is on a cell's centre at
the last frame (an even number of steps keeps a lattice point's parity) and a caption can name
where it ends. Not 9: bouncing between the borders repeats every 8 half-cell steps, so after 8
steps every object would be back where it started; after 6 most are not.

Objects never overlap: every two are at least one cell apart along some axis in every frame, so
each frame parses like a picture (`smalto.verify.motion` reads clips back). A clip never shows
two objects of one colour and shape: an object is tracked across frames by what it looks like.

From a seed we get the clip, its frames, captions of the motion and question-answer pairs.
Held-out motions (a shape moving in a direction, e.g. a circle moving down) never occur in the
"train" split; the "heldout" split has at least one in every clip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from smalto.data.shapes import (BACKGROUND, GRID, NUMBER_WORDS, PALETTE, POSITIONS, SHAPES, Obj, Scene,
                                ShapesConfig, shape_mask)
from smalto.errors import SmaltoError

LATTICE = 2 * GRID - 1  # half-cell points per axis: 0, 2, 4 are the cells' centres
PERIOD = 2 * (LATTICE - 1)  # bouncing between 0 and 4 repeats every 8 half-cell steps

# Unit steps in lattice coordinates (x right, y down) and how a caption says them.
DIRECTIONS: dict[tuple[int, int], str] = {
    (1, 0): "right", (-1, 0): "left", (0, -1): "up", (0, 1): "down",
    (1, -1): "up and right", (-1, -1): "up and left", (1, 1): "down and right", (-1, 1): "down and left",
}
SPEEDS = {1: "slowly", 2: "fast"}  # half-cells per frame


@dataclass(frozen=True)
class MotionConfig:
    frames: int = 7
    world: ShapesConfig = field(default_factory=ShapesConfig)
    # "bounce": objects move and bounce off the border; "still": nothing moves.
    motion: str = "bounce"
    still: float = 0.25  # chance that an object stays where it is (in "bounce")
    speeds: tuple[int, ...] = (1, 2)
    # (shape, direction) pairs the "train" split never shows.
    heldout: tuple[tuple[str, str], ...] = (("circle", "down"), ("square", "up and left"), ("triangle", "right"))

    def __post_init__(self) -> None:
        if not 1 <= self.frames <= 64 or (self.frames - 1) % 2:
            raise SmaltoError(f"MotionConfig: frames must be odd and between 1 and 64 (an object that starts at a "
                              f"cell's centre ends on one), got {self.frames}")
        if self.motion not in ("bounce", "still"):
            raise SmaltoError(f"MotionConfig: motion must be bounce or still, got {self.motion!r}")
        if not set(self.speeds) <= set(SPEEDS) or not self.speeds:
            raise SmaltoError(f"MotionConfig: speeds are 1 (half a cell per frame) and/or 2, got {self.speeds}")
        if self.world.jitter:
            raise SmaltoError("MotionConfig: objects move on the half-cell lattice; the world must have no jitter")
        names = set(DIRECTIONS.values())
        for shape, direction in self.heldout:
            if shape not in self.world.shapes or direction not in names:
                raise SmaltoError(f"MotionConfig: held-out motion ({shape}, {direction}) is not in the world")


def _fold(p: int) -> int:
    """A lattice coordinate after bouncing: p walks 0..4 and back."""
    q = p % PERIOD
    return q if q <= LATTICE - 1 else PERIOD - q


@dataclass(frozen=True, order=True)
class Mover:
    """An object and its motion: it starts at lattice point (x, y) and steps (dx, dy) per frame."""
    shape: str
    color: str
    size: str
    x: int
    y: int
    dx: int = 0
    dy: int = 0

    def at(self, t: int) -> tuple[int, int]:
        """Lattice point at frame t (bouncing off the border)."""
        return _fold(self.x + self.dx * t), _fold(self.y + self.dy * t)

    @property
    def free(self) -> bool:
        """Not heading into the border it starts at (it would bounce at once and move the other way)."""
        edge = LATTICE - 1
        return not ((self.x == 0 and self.dx < 0) or (self.x == edge and self.dx > 0)
                    or (self.y == 0 and self.dy < 0) or (self.y == edge and self.dy > 0))

    @property
    def moves(self) -> bool:
        return bool(self.dx or self.dy)

    @property
    def speed(self) -> int:
        return max(abs(self.dx), abs(self.dy))

    @property
    def direction(self) -> str | None:
        """The direction it sets off in (None if it stays)."""
        return DIRECTIONS[(int(np.sign(self.dx)), int(np.sign(self.dy)))] if self.moves else None

    def cell(self, t: int) -> str | None:
        """The position word of its cell at frame t, or None between cells."""
        x, y = self.at(t)
        return POSITIONS[y // 2][x // 2] if x % 2 == 0 and y % 2 == 0 else None

    def phrase(self) -> str:
        return f"{self.size} {self.color} {self.shape}"

    def obj(self, t: int = 0) -> Obj:
        """The picture's object at frame t (its cell: the one its centre is in, the lower at a border)."""
        x, y = self.at(t)
        return Obj(y // 2, x // 2, self.shape, self.color, self.size)


@dataclass(frozen=True)
class Clip:
    movers: tuple[Mover, ...]
    frames: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "movers", tuple(sorted(self.movers)))

    def to_dict(self) -> dict:
        return {"frames": self.frames, "objects": [
            {"shape": m.shape, "color": m.color, "size": m.size, "x": m.x, "y": m.y, "dx": m.dx, "dy": m.dy}
            for m in self.movers]}

    @classmethod
    def from_dict(cls, d: dict) -> "Clip":
        """Raises ValueError (or KeyError/TypeError) unless d is a well-formed clip."""
        movers = []
        for o in d["objects"]:
            m = Mover(str(o["shape"]), str(o["color"]), str(o["size"]), int(o["x"]), int(o["y"]),
                      int(o.get("dx", 0)), int(o.get("dy", 0)))
            if not (0 <= m.x < LATTICE and 0 <= m.y < LATTICE) or max(abs(m.dx), abs(m.dy)) > max(SPEEDS):
                raise ValueError(f"object {o} is off the {LATTICE}x{LATTICE} lattice or too fast")
            if m.shape not in SHAPES or m.color not in PALETTE:
                raise ValueError(f"unknown shape or colour in {o}")
            movers.append(m)
        frames = int(d["frames"])
        if not 1 <= frames <= 64:  # (MotionConfig's range, and the clip reader's MAX_FRAMES)
            raise ValueError(f"a clip has 1 to 64 frames, not {frames}")
        return cls(tuple(movers), frames)

    def scene(self, t: int) -> Scene:
        """Frame t's scene graph (cells by where each object's centre is)."""
        return Scene(tuple(m.obj(t) for m in self.movers))

    def points(self, t: int) -> dict[tuple[str, str, str], tuple[int, int]]:
        """Each object's lattice point at frame t, by its looks."""
        return {(m.shape, m.color, m.size): m.at(t) for m in self.movers}

    def get(self, color: str, shape: str) -> Mover | None:
        return next((m for m in self.movers if (m.color, m.shape) == (color, shape)), None)


@dataclass(frozen=True)
class ClipSample:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    clip: Clip
    captions: list[str]  # captions[0] is canonical: parse_clip_caption reads it back
    qa: list[dict]  # {"q", "a", "type"}


# --- sampling and rendering

def _apart(a: Mover, b: Mover, frames: int) -> bool:
    """Never overlapping: at least one cell apart along some axis in every frame."""
    for t in range(frames):
        (ax, ay), (bx, by) = a.at(t), b.at(t)
        if max(abs(ax - bx), abs(ay - by)) < 2:
            return False
    return True


def _velocities(cfg: MotionConfig) -> list[tuple[int, int]]:
    return [(ux * s, uy * s) for (ux, uy) in DIRECTIONS for s in cfg.speeds]


def sample_clip(cfg: MotionConfig, rng: np.random.Generator, split: str = "train") -> Clip:
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"unknown split {split!r}")
    w = cfg.world
    n = int(rng.integers(w.min_objects, w.max_objects + 1))
    pairs = w.pairs("train" if split == "train" else "all")
    velocities = _velocities(cfg)
    movers: list[Mover] = []
    for i in range(n):
        must_hold_out = split == "heldout" and i == 0
        for _ in range(200):  # rejection sampling; a crowded clip drops the object that does not fit
            color, shape = pairs[rng.integers(len(pairs))]
            if any((m.color, m.shape) == (color, shape) for m in movers):
                continue
            size = w.size_names[rng.integers(len(w.sizes))]
            x, y = 2 * rng.integers(GRID, size=2)
            if must_hold_out:
                held = [d for s, d in cfg.heldout if s == shape]
                if not held or cfg.motion == "still":
                    continue
                unit = next(u for u, name in DIRECTIONS.items() if name == held[rng.integers(len(held))])
                s = cfg.speeds[rng.integers(len(cfg.speeds))]
                dx, dy = unit[0] * s, unit[1] * s
            elif cfg.motion == "still" or rng.random() < cfg.still:
                dx = dy = 0
            else:
                dx, dy = velocities[rng.integers(len(velocities))]
            m = Mover(shape, color, size, int(x), int(y), int(dx), int(dy))
            if not m.free:
                continue
            if split == "train" and (shape, m.direction) in cfg.heldout:
                continue
            if all(_apart(m, other, cfg.frames) for other in movers):
                movers.append(m)
                break
    if not movers:
        raise SmaltoError("could not place an object in the clip (is the world too small?)")
    return Clip(tuple(movers), cfg.frames)


def pixel_centre(point: tuple[int, int], cfg: ShapesConfig) -> tuple[float, float]:
    x, y = point
    return (x / 2 + 0.5) * cfg.cell, (y / 2 + 0.5) * cfg.cell


def render_frame(clip: Clip, t: int, cfg: ShapesConfig) -> np.ndarray:
    size = cfg.image_size
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for m in clip.movers:
        cx, cy = pixel_centre(m.at(t), cfg)
        image[shape_mask(m.shape, cx, cy, cfg.side(m.size), size, size)] = PALETTE[m.color]
    return image


def render_clip(clip: Clip, cfg: ShapesConfig) -> np.ndarray:
    """uint8 [T, H, W, 3]."""
    return np.stack([render_frame(clip, t, cfg) for t in range(clip.frames)])


# --- language

def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def describe(m: Mover) -> str:
    """The canonical phrase: enough to redraw the motion."""
    if not m.moves:
        return f"a {m.phrase()} stays at the {m.cell(0)}"
    return f"a {m.phrase()} moves {m.direction} {SPEEDS[m.speed]} from the {m.cell(0)}"


def clip_captions(clip: Clip) -> list[str]:
    """Paraphrases of one clip; the first is canonical (complete and parseable)."""
    movers, end = clip.movers, clip.frames - 1
    canonical = _join([describe(m) for m in movers])
    journeys = _join([f"a {m.phrase()} moves from the {m.cell(0)} to the {m.cell(end)}" if m.moves
                      else f"a {m.phrase()} stays at the {m.cell(0)}" for m in movers])
    moving = sum(m.moves for m in movers)
    counted = (f"{NUMBER_WORDS[len(movers)]} object{'s' if len(movers) > 1 else ''}, "
               f"{NUMBER_WORDS[moving] if moving else 'none'} moving: " + _join(
                   [f"a {m.phrase()} going {m.direction}" if m.moves else f"a {m.phrase()} standing still"
                    for m in movers]))
    return [canonical, journeys, counted]


_CELL = "|".join(name for row in POSITIONS for name in row)
_DIRECTION = "|".join(sorted(DIRECTIONS.values(), key=len, reverse=True))
_MOVER = re.compile(rf"a (\w+) (\w+) (\w+) (?:stays at the ({_CELL})|moves ({_DIRECTION}) (slowly|fast) "
                    rf"from the ({_CELL}))")
_CELL_INDEX = {name: (r, c) for r, row in enumerate(POSITIONS) for c, name in enumerate(row)}
_UNIT = {name: u for u, name in DIRECTIONS.items()}
_SPEED = {word: s for s, word in SPEEDS.items()}


def parse_clip_caption(text: str, frames: int = 9) -> Clip | None:
    """The clip a canonical caption describes, or None if the text is not one."""
    movers = []
    for size, color, shape, still_at, direction, speed, start in _MOVER.findall(text.lower()):
        r, c = _CELL_INDEX[still_at or start]
        dx, dy = (0, 0)
        if direction:
            (ux, uy), s = _UNIT[direction], _SPEED[speed]
            dx, dy = ux * s, uy * s
        movers.append(Mover(shape, color, size, 2 * c, 2 * r, dx, dy))
    return Clip(tuple(movers), frames) if movers else None


def passes(a: Mover, b: Mover, frames: int) -> bool:
    """Does a pass b: does their order left-to-right or top-to-bottom swap at some frame?"""
    def signs(axis: int) -> set[int]:
        return {int(np.sign(a.at(t)[axis] - b.at(t)[axis])) for t in range(frames)} - {0}
    return signs(0) == {-1, 1} or signs(1) == {-1, 1}


def clip_questions(clip: Clip, rng: np.random.Generator) -> list[dict]:
    """One question of each applicable type, answers as short words."""
    movers, end = clip.movers, clip.frames - 1
    qa: list[dict] = []

    def add(kind: str, q: str, a: str | int) -> None:
        qa.append({"q": q, "a": str(a), "type": kind})

    def pick(seq):
        return seq[rng.integers(len(seq))]

    moving = [m for m in movers if m.moves]
    add("count_moving", "how many objects move?", len(moving))
    m = pick(movers)
    name = f"{m.color} {m.shape}"
    add("direction", f"which way does the {name} move?", m.direction or "it stays")
    add("moves", f"does the {name} move?", "yes" if m.moves else "no")
    add("start", f"where does the {name} start?", m.cell(0))
    add("end", f"where does the {name} end?", m.cell(end))
    if len(moving) == 1:
        add("which", "which object moves?", f"the {moving[0].color} {moving[0].shape}")
    if len(movers) >= 2:
        i, j = rng.choice(len(movers), size=2, replace=False)
        a, b = movers[i], movers[j]
        add("pass", f"does the {a.color} {a.shape} pass the {b.color} {b.shape}?",
            "yes" if passes(a, b, clip.frames) else "no")
    return qa


# --- the world in motion as an indexable, endless stream

class MotionWorld:
    """Clip `i` is a pure function of (seed, split, i), as in `ShapesWorld`."""

    SPLITS = ("train", "heldout", "all")

    def __init__(self, cfg: MotionConfig | None = None, seed: int = 0, split: str = "train"):
        if split not in self.SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {self.SPLITS}")
        if seed < 0:
            raise SmaltoError(f"seed must be >= 0, got {seed}")
        self.cfg = cfg or MotionConfig()
        self.seed, self.split = seed, split

    def rng(self, index: int) -> np.random.Generator:
        # a tag keeps clip i's randomness apart from ShapesWorld's picture i at the same seed
        return np.random.default_rng([self.seed, self.SPLITS.index(self.split), index, 0x717])

    def clip(self, index: int) -> Clip:
        return sample_clip(self.cfg, self.rng(index), self.split)

    def __getitem__(self, index: int) -> ClipSample:
        rng = self.rng(index)
        clip = sample_clip(self.cfg, rng, self.split)
        return ClipSample(render_clip(clip, self.cfg.world), clip, clip_captions(clip), clip_questions(clip, rng))

    def clips(self, start: int, count: int) -> np.ndarray:
        """uint8 [count, T, H, W, 3], rendered on the fly."""
        return np.stack([render_clip(self.clip(i), self.cfg.world) for i in range(start, start + count)])

