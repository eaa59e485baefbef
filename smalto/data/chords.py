"""Chords: two or three notes at once in a slot, and progressions of them whose start says how they go on.

A progression is heard in ShapesWorld's nine time slots (`data.sounds`), each a chord or a rest.
A chord is two or three of the six pitches (colours) sounding together in one timbre (shape) and
one loudness (size), the size's amplitude shared among its notes, so that a chord is as loud as
a note. The whole-tone pitches make a chord exactly readable: every pitch is two semitones or
more from the others (apart by more than a 0.1 s window's main lobe), and no note's 2nd or 3rd
harmonic falls on another's fundamental or on its harmonics (the 2nd harmonics lie on the
whole-tone scale an octave up, the 3rd on the other whole-tone scale, a fifth above that), so
the sound verifier's DFT at exactly those frequencies reads each note of a chord as it reads a
note alone (`verify.hearing.parse_chords`).

Its rules, as a melody's (`data.melodies`):

- motif: one to three different chords (one of them perhaps a rest, never first) repeated;
- parallel: one chord's shape moved up or down the six pitches a step a slot, wrapping round
  (a chord progression in parallel motion), in one timbre and loudness.

Any four slots show the rule, so a progression is continued from four to six given slots
(`melodies.GIVEN`), and judged exactly: every slot after them heard as the truth's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smalto.data.melodies import SLOTS
from smalto.data.shapes import ShapesConfig
from smalto.data.sounds import PITCHES, TIMBRES, SoundConfig, note

CHORD_RULES = ("motif", "parallel")


@dataclass(frozen=True)
class Chord:
    colors: frozenset[str]  # its pitches, two or three (one: a note)
    shape: str  # its timbre
    size: str  # its loudness, shared among its notes

    def words(self) -> str:
        """'a large red, green and blue circle chord' (colours in the world's order)."""
        names = [c for c in PITCHES if c in self.colors]
        said = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return f"a {self.size} {said} {self.shape}" + (" chord" if len(names) > 1 else "")


@dataclass(frozen=True)
class Progression:
    slots: tuple[Chord | None, ...]  # nine: a chord or a rest (None) each
    rule: str  # "motif" or "parallel"
    period: int  # the motif's chords (parallel motion: 6, its pitches)


def progression(rng: np.random.Generator, world: ShapesConfig) -> Progression:
    """A progression drawn by `rng`: a motif two times in three, else parallel motion."""
    sizes = [name for name, _ in world.sizes]
    colors = list(world.colors)

    def chord() -> Chord:
        k = int(rng.integers(2, 4))
        return Chord(frozenset(rng.choice(colors, k, replace=False).tolist()),
                     world.shapes[rng.integers(len(world.shapes))], sizes[rng.integers(len(sizes))])

    if rng.random() < 2 / 3:
        period = int(rng.integers(1, 4))
        motif: list[Chord | None] = []
        while len(motif) < period:  # (different chords, so that the period shows)
            if (c := chord()) not in motif:
                motif.append(c)
        if period > 1 and rng.random() < 0.25:
            motif[int(rng.integers(1, period))] = None
        return Progression(tuple(motif[k % period] for k in range(SLOTS)), "motif", period)
    first, step = chord(), 1 if rng.random() < 0.5 else -1
    at = [colors.index(c) for c in first.colors]
    moved = tuple(Chord(frozenset(colors[(i + step * k) % len(colors)] for i in at), first.shape, first.size)
                  for k in range(SLOTS))
    return Progression(moved, "parallel", len(colors))


def render_chords(slots: tuple[Chord | None, ...], cfg: SoundConfig, rng: np.random.Generator | None = None
                  ) -> np.ndarray:
    """The progression's sound, float32 [cfg.samples]: each chord's notes at its size's amplitude
    over their number (jittered together by `rng`, as a note's loudness is)."""
    out = np.zeros(cfg.samples)
    loud = dict(cfg.loudness)
    for k, chord in enumerate(slots):
        if chord is None:
            continue
        scale = 1.0 + cfg.jitter * (2 * rng.random() - 1) if rng is not None else 1.0
        share = loud[chord.size] * scale / len(chord.colors)
        start = k * cfg.slot_samples
        for color in chord.colors:
            out[start:start + cfg.slot_samples] += note(PITCHES[color], TIMBRES[chord.shape], share, cfg)
    return out.astype(np.float32)


def continued(truth: Progression, heard: tuple[Chord | None, ...], given: int) -> bool:
    """Whether a heard progression holds exactly the truth's chords in every slot after the first `given`."""
    return tuple(heard[given:]) == truth.slots[given:]


class ChordWorld:
    """Progression `i` of a seed, and its sound."""

    def __init__(self, cfg: SoundConfig | None = None, seed: int = 0):
        self.cfg, self.seed = cfg or SoundConfig(), seed

    def progression(self, index: int) -> Progression:
        return progression(np.random.default_rng([self.seed, index, 53]), self.cfg.world)

    def wave(self, index: int) -> np.ndarray:
        return render_chords(self.progression(index).slots, self.cfg, np.random.default_rng([self.seed, index, 59]))
