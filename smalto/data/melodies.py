"""Melodies: nine notes in a row that follow a rule, so that a sound's start says how it goes on.

A melody is heard as a ShapesWorld scene is (`data.sounds`): nine time slots, each a note (a pitch
for a colour, a timbre for a shape, a loudness for a size) or a rest. Written as a `Scene` with an
object in every sounding cell, it renders with `render_sound` and the sound verifier reads it
back unchanged, so a continuation is judged exactly. Its rule fixes the rest from the start:

- motif: one to three different notes (one of them perhaps a rest) repeated: "red circle, blue
  square, red circle, blue square, ...";
- scale: one timbre and loudness stepping up or down the six pitches, wrapping round.

Any four slots show the rule (a motif's period is at most three, so its first note comes back
by the fourth; a scale shows its step in two), and the continuation of four to six given slots
is the melody's remaining slots: `GIVEN`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smalto.data.shapes import GRID, Obj, Scene, ShapesConfig
from smalto.data.sounds import SoundConfig, render_sound

SLOTS = GRID * GRID
GIVEN = (4, 5, 6)  # slots a continuation may be given: each shows the rule, and leaves some to write
RULES = ("motif", "scale")


@dataclass(frozen=True)
class Melody:
    scene: Scene  # a note in each sounding slot, slot k at cell (k // 3, k % 3)
    rule: str  # "motif" or "scale"
    period: int  # the motif's notes (a scale: 6, its pitches)

    def notes(self) -> list[tuple[str, str, str] | None]:
        """Each slot's (shape, colour, size), None for a rest."""
        held = {o.row * GRID + o.col: (o.shape, o.color, o.size) for o in self.scene.objects}
        return [held.get(k) for k in range(SLOTS)]


def melody(rng: np.random.Generator, world: ShapesConfig) -> Melody:
    """A melody drawn by `rng`: a motif two times in three, else a scale."""
    sizes = [name for name, _ in world.sizes]

    def note() -> tuple[str, str, str]:
        return (world.shapes[rng.integers(len(world.shapes))], world.colors[rng.integers(len(world.colors))],
                sizes[rng.integers(len(sizes))])

    if rng.random() < 2 / 3:
        period = int(rng.integers(1, 4))
        motif: list[tuple[str, str, str] | None] = []
        while len(motif) < period:  # (different notes, so that the period shows)
            if (n := note()) not in motif:
                motif.append(n)
        if period > 1 and rng.random() < 0.25:
            motif[int(rng.integers(1, period))] = None  # a rest, never first: a melody starts on a note
        slots, rule = [motif[k % period] for k in range(SLOTS)], "motif"
    else:
        shape, _, size = note()
        start, step = int(rng.integers(len(world.colors))), 1 if rng.random() < 0.5 else -1
        slots = [(shape, world.colors[(start + step * k) % len(world.colors)], size) for k in range(SLOTS)]
        rule, period = "scale", len(world.colors)
    return Melody(Scene(tuple(Obj(k // GRID, k % GRID, *n) for k, n in enumerate(slots) if n)), rule, period)


def continuation(truth: Scene, heard: Scene, given: int) -> bool:
    """Whether a heard melody holds exactly the truth's notes in every slot after the first `given`."""
    def after(scene: Scene) -> set[Obj]:
        return {o for o in scene.objects if o.row * GRID + o.col >= given}

    return after(truth) == after(heard)


class MelodyWorld:
    """Melody `i` of a seed, and its sound (the loudness jittered as a scene's is)."""

    def __init__(self, cfg: SoundConfig | None = None, seed: int = 0):
        self.cfg, self.seed = cfg or SoundConfig(), seed

    def __getitem__(self, index: int) -> Melody:
        return melody(np.random.default_rng([self.seed, index, 41]), self.cfg.world)

    def wave(self, index: int) -> np.ndarray:
        return render_sound(self[index].scene, self.cfg, np.random.default_rng([self.seed, index, 43]))

    def waves_of(self, indices) -> np.ndarray:
        """float32 [len(indices), samples]."""
        return np.stack([self.wave(i) for i in indices])
