"""The three kinds of scene ShapesEval scores, so a figure says what the model had seen.

- seen: scenes of the "train" split that the model's recorded training streams showed it
  (verbatim: the same scene graph), which measure memory as much as skill;
- unseen: scenes of training compositions that it never saw as wholes: the "unseen" split
  (reserved by rule from every training stream since the reserve existed), less any that a
  recorded stream showed (models trained before the reserve saw many of them);
- heldout: scenes with a (colour, shape) pair that training never shows.

The headline is `unseen`. A model whose streams were never recorded has no `seen` kind, and its
`unseen` kind rests on the reserve alone (`SceneKinds.verified` is False).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import islice
from typing import Callable

from smalto.data.shapes import Sample, Scene, ShapesConfig, ShapesWorld, scene_key

KINDS = ("seen", "unseen", "heldout")
POOL = 4000  # scenes per kind, found by scanning the world in order; more than any section asks for
SCAN = 60_000  # world indices scanned at most for one kind


class Scenes:
    """The scenes of a world that pass `keep`, renumbered 0, 1, ... in world order: the same
    interface the evaluators read from a `ShapesWorld` (`scene(i)`, `[i]`, `cfg`, `seed`, `split`),
    and a length (a kind may hold fewer scenes than a section asks for: a model that saw every
    one-object scene has no unseen one)."""

    def __init__(self, world: ShapesWorld, keep: Callable[[Scene], bool] | None = None):
        self.world, self.cfg, self.seed, self.split = world, world.cfg, world.seed, world.split
        self.index = list(range(POOL)) if keep is None else \
            list(islice((i for i in range(SCAN) if keep(world.scene(i))), POOL))

    def __len__(self) -> int:
        return len(self.index)

    def scene(self, i: int) -> Scene:
        return self.world.scene(self.index[i])

    def __getitem__(self, i: int) -> Sample:
        return self.world[self.index[i]]


@dataclass
class SceneKinds:
    kinds: dict[str, Scenes]
    verified: bool  # whether the unseen kind was checked against recorded training streams
    seen_scenes: int | None  # distinct scenes the streams showed (None: never recorded)

    def describe(self) -> dict:
        """What the report says about its scenes."""
        return {"verified": self.verified, "scenes_in_training": self.seen_scenes,
                **{f"{k}_pool": len(v) for k, v in self.kinds.items()}}


_SEEN: dict[str, frozenset[str]] = {}  # streams (as JSON) -> the scene keys they showed


def seen_by(streams: list[dict]) -> frozenset[str]:
    """The scene keys recorded streams showed (`training.data.seen_scenes`), replayed once per
    process for each set of streams (about 12 s for the shipped model's)."""
    import json

    from smalto.training.data import seen_scenes

    key = json.dumps(streams, sort_keys=True)
    if key not in _SEEN:
        _SEEN[key] = frozenset(seen_scenes(streams))
    return _SEEN[key]


def scene_kinds(shapes: ShapesConfig, seed: int, streams: list[dict] | None, kinds=KINDS) -> SceneKinds:
    """The kinds asked for, from the worlds of `seed`, split by the model's recorded `streams`."""
    seen = seen_by(streams) if streams is not None else None
    shapes = replace(shapes, reserve=shapes.reserve or ShapesConfig().reserve)
    out = {}
    for kind in kinds:
        if kind == "seen":
            if seen is not None:
                out[kind] = Scenes(ShapesWorld(shapes, seed, "train"), lambda s: scene_key(s) in seen)
            continue
        world = ShapesWorld(shapes, seed, "unseen" if kind == "unseen" else kind)
        out[kind] = Scenes(world, None if seen is None else lambda s: scene_key(s) not in seen)
    return SceneKinds(out, seen is not None, None if seen is None else len(seen))
