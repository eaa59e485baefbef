"""Reading a clip back: each frame's scene graph, objects tracked across frames, motion recovered.

Each frame is read as a picture (`smalto.verify.scene.inspect`); each object's fitted centre is
put on the half-cell lattice of `smalto.data.motion`, and an object is followed from frame to
frame by its looks (a clip never shows two objects of one colour and shape). Its motion is the
one velocity, among those ShapesWorld makes, whose bouncing path passes through every point it
was seen at; a path no velocity explains is a physics error, and the clip is not recovered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smalto.data.motion import LATTICE, SPEEDS, Clip, MotionConfig, Mover
from smalto.data.shapes import Scene
from smalto.verify.scene import inspect

OFF_LATTICE = 0.3  # largest distance (in half-cells) of a fitted centre from its lattice point

Key = tuple[str, str, str]  # (shape, color, size)


@dataclass(frozen=True)
class ClipParse:
    clip: Clip | None  # the recovered clip; None if some frame or path is not ShapesWorld's
    scenes: tuple[Scene, ...]  # each frame's scene graph, as a picture's
    tracks: dict[Key, list[tuple[int, int] | None]]  # each object's lattice point per frame
    problems: tuple[str, ...]  # why the clip was not recovered (empty when it was)


def _velocities() -> list[tuple[int, int]]:
    top = max(SPEEDS)
    return [(dx, dy) for dx in range(-top, top + 1) for dy in range(-top, top + 1)
            if (dx == 0 or dy == 0 or abs(dx) == abs(dy))]


def recover(key: Key, path: list[tuple[int, int]]) -> Mover | None:
    """The mover whose path this is, or None when no velocity of ShapesWorld's explains it."""
    (x, y), frames = path[0], len(path)
    for dx, dy in sorted(_velocities(), key=lambda v: (abs(v[0]) + abs(v[1]), v)):  # still first
        m = Mover(*key, x, y, dx, dy)
        if m.free and all(m.at(t) == path[t] for t in range(frames)):
            return m
    return None


def parse_clip(frames: np.ndarray, cfg: MotionConfig | None = None) -> ClipParse:
    """Read uint8 frames [T, H, W, 3] into a clip."""
    cfg = cfg or MotionConfig()
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3], got shape {frames.shape}")
    world, count = cfg.world, len(frames)
    tracks: dict[Key, list[tuple[int, int] | None]] = {}
    scenes, problems = [], []
    for t, frame in enumerate(frames):
        parse = inspect(frame, world)
        scenes.append(parse.scene)
        for d in parse.detections:
            o = d.obj
            key = (o.shape, o.color, o.size)
            if o.shape == "unknown":
                problems.append(f"frame {t}: a {o.color} shape the verifier does not know")
                continue
            u = np.asarray(d.centre) / world.cell * 2 - 1  # pixels -> half-cells
            point = np.round(u).astype(int)
            if np.abs(u - point).max() > OFF_LATTICE or not ((0 <= point) & (point < LATTICE)).all():
                problems.append(f"frame {t}: the {o.phrase()} is between lattice points")
                continue
            track = tracks.setdefault(key, [None] * count)
            if track[t] is not None:
                problems.append(f"frame {t}: two {o.color} {o.shape}s")
            track[t] = (int(point[0]), int(point[1]))
    movers = []
    for key, track in tracks.items():
        name = f"{key[2]} {key[1]} {key[0]}"
        if None in track:
            problems.append(f"the {name} is missing from frame {track.index(None)}")
        elif (m := recover(key, track)) is None:
            problems.append(f"the {name} does not move at a constant velocity")
        else:
            movers.append(m)
    clip = None if problems or not movers else Clip(tuple(movers), count)
    return ClipParse(clip, tuple(scenes), tracks, tuple(dict.fromkeys(problems)))


def clip_diff(expected: Clip, got: ClipParse) -> list[str]:
    """Human-readable differences; empty when the clip was read back exactly."""
    if got.clip is None:
        return list(got.problems)
    missing = [m for m in expected.movers if m not in got.clip.movers]
    extra = [m for m in got.clip.movers if m not in expected.movers]
    return [f"missing {m.phrase()} ({m.x}, {m.y}) moving ({m.dx}, {m.dy})" for m in missing] + \
        [f"unexpected {m.phrase()} ({m.x}, {m.y}) moving ({m.dx}, {m.dy})" for m in extra]
