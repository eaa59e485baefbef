"""ShapesWorld sonified: every scene has a sound, and its scene graph is that sound's exact truth.

The nine cells are heard in reading order, one time slot each (`SoundConfig.slot` seconds); an
object is a note in its cell's slot, an empty cell is silence:

- colour -> pitch: six notes of the whole-tone scale from C4 (C D E F# G# A#), all inside one octave,
  so no note's harmonic is another note's fundamental;
- shape -> timbre: a circle is a sine, a square a square wave (odd harmonics at 1/n), a triangle a
  sawtooth (every harmonic at 1/n), each band-limited below Nyquist;
- size -> loudness: a large note's fundamental is three times a small one's (9.5 dB), each jittered;
- position -> onset: the slot of its cell.

Every note starts at phase zero on its slot's boundary, which is also a codec frame's boundary, so a
sound is its scene plus the loudness jitter and nothing else a tokenizer would have to guess.
`smalto.verify.hearing.parse_sound` reads the scene back from the waveform.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from smalto.data.shapes import GRID, Sample, Scene, ShapesConfig, ShapesWorld
from smalto.errors import SmaltoError

# Fundamentals in Hz: the whole-tone scale from middle C (every pitch 2 semitones, >= 12 %, apart).
PITCHES = {"red": 261.63, "green": 293.66, "blue": 329.63, "yellow": 369.99, "purple": 415.30, "cyan": 466.16}
# Harmonic amplitudes relative to the fundamental: what a timbre is, and what the verifier measures.
TIMBRES = {"circle": "sine", "square": "square", "triangle": "sawtooth"}


def harmonic(timbre: str, n: int) -> float:
    """The amplitude of harmonic n (1 = the fundamental) of a timbre, relative to the fundamental."""
    if timbre == "sine":
        return float(n == 1)
    if timbre == "square":
        return 1.0 / n if n % 2 else 0.0
    if timbre == "sawtooth":
        return 1.0 / n
    raise SmaltoError(f"unknown timbre {timbre!r} (known: {', '.join(sorted(set(TIMBRES.values())))})")


@dataclass(frozen=True)
class SoundConfig:
    sample_rate: int = 16000
    slot: float = 0.15  # seconds a cell lasts: 2400 samples, six 400-sample codec frames at 16 kHz
    attack: float = 0.005  # seconds of linear fade in and out, so a note starts and ends without a click
    release: float = 0.02
    gap: float = 0.01  # silence at the end of each slot, so consecutive notes stay apart
    # Amplitude of a note's fundamental by size; a large one's waveform peaks below 1 for every timbre.
    loudness: tuple[tuple[str, float], ...] = (("small", 0.15), ("large", 0.45))
    jitter: float = 0.1  # each note's loudness varies by up to this fraction
    world: ShapesConfig = field(default_factory=ShapesConfig)

    def __post_init__(self) -> None:
        if self.sample_rate < 8000:
            raise SmaltoError(f"SoundConfig: sample_rate must be >= 8000 Hz, got {self.sample_rate}")
        if not 0.05 <= self.slot <= 2.0:
            raise SmaltoError(f"SoundConfig: slot must be 0.05 .. 2 seconds, got {self.slot}")
        if self.attack + self.release + self.gap >= self.slot / 2:
            raise SmaltoError("SoundConfig: attack + release + gap must leave half the slot sustained")
        if not 0 <= self.jitter < 0.5:
            raise SmaltoError(f"SoundConfig: jitter must be in [0, 0.5), got {self.jitter}")
        for color in self.world.colors:
            if color not in PITCHES:
                raise SmaltoError(f"SoundConfig: colour {color!r} has no pitch (pitched: {', '.join(PITCHES)})")
        for shape in self.world.shapes:
            if shape not in TIMBRES:
                raise SmaltoError(f"SoundConfig: shape {shape!r} has no timbre (known: {', '.join(TIMBRES)})")
        if {name for name, _ in self.loudness} != set(self.world.size_names):
            raise SmaltoError("SoundConfig: loudness must name the world's sizes")

    @property
    def slot_samples(self) -> int:
        return round(self.slot * self.sample_rate)

    @property
    def samples(self) -> int:
        """A scene's sound: every cell's slot."""
        return GRID * GRID * self.slot_samples

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


def audible(world: ShapesConfig | None) -> bool:
    """Whether a world has a sound: every colour a pitch, every shape a timbre (None, a folder: no)."""
    return world is not None and set(world.colors) <= set(PITCHES) and set(world.shapes) <= set(TIMBRES)


def slot_codes(frames: int, levels: int) -> tuple[tuple[int, ...], ...]:
    """For each cell (raster order), the raster indices of a sound's codes [frames, levels] that
    fall in its time slot: a sound's counterpart of `shapes.cell_patches`, what the cells layout
    writes after each cell's words (a codec frame never straddles two slots: `SoundConfig.slot`)."""
    cells = GRID * GRID
    if frames % cells:
        raise SmaltoError(f"a sound of {frames} codec frames does not split into {cells} equal time slots")
    per = frames // cells
    return tuple(tuple(f * levels + k for f in range(c * per, (c + 1) * per) for k in range(levels))
                 for c in range(cells))


def note(pitch: float, timbre: str, amplitude: float, cfg: SoundConfig) -> np.ndarray:
    """One slot's samples: a band-limited note from phase zero, its envelope, then the gap."""
    n = cfg.slot_samples
    t = np.arange(n) / cfg.sample_rate
    wave = np.zeros(n)
    for k in range(1, int(0.45 * cfg.sample_rate / pitch) + 1):  # harmonics kept clear of Nyquist
        if (a := harmonic(timbre, k)) > 0:
            wave += a * np.sin(2 * np.pi * k * pitch * t)
    sounding = n - round(cfg.gap * cfg.sample_rate)
    envelope = np.zeros(n)
    envelope[:sounding] = np.minimum(1.0, np.minimum(t[:sounding] / cfg.attack,
                                                     (sounding / cfg.sample_rate - t[:sounding]) / cfg.release))
    return amplitude * wave * envelope


def render_sound(scene: Scene, cfg: SoundConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    """The scene's sound, float32 [cfg.samples] in [-1, 1]; `rng` draws the loudness jitter (None: none)."""
    out = np.zeros(cfg.samples)
    loud = dict(cfg.loudness)
    for o in scene.objects:
        scale = 1.0 + cfg.jitter * (2 * rng.random() - 1) if rng is not None else 1.0
        start = (o.row * GRID + o.col) * cfg.slot_samples
        out[start:start + cfg.slot_samples] = note(PITCHES[o.color], TIMBRES[o.shape], loud[o.size] * scale, cfg)
    return out.astype(np.float32)


@dataclass(frozen=True)
class SoundSample:
    wave: np.ndarray  # float32 [samples] at cfg.sample_rate
    scene: Scene
    captions: list[str]  # the picture's captions: a sound and its picture say the same scene
    qa: list[dict]


class SoundWorld:
    """Sound `i` is scene `i` of the ShapesWorld with the same seed and split, heard: the picture and
    the sound of an index are one scene, so picture <-> sound tasks pair them by index."""

    SPLITS = ShapesWorld.SPLITS

    def __init__(self, cfg: SoundConfig | None = None, seed: int = 0, split: str = "train"):
        self.cfg = cfg or SoundConfig()
        self.shapes = ShapesWorld(self.cfg.world, seed, split)

    def jitter(self, index: int) -> np.random.Generator:
        # (apart from the scene's own generator, so a sound's scene is exactly its picture's)
        return np.random.default_rng([self.shapes.seed, self.SPLITS.index(self.shapes.split), index, 31])

    def __getitem__(self, index: int) -> SoundSample:
        s: Sample = self.shapes[index]
        return SoundSample(render_sound(s.scene, self.cfg, self.jitter(index)), s.scene, s.captions, s.qa)

    def __iter__(self) -> Iterator[SoundSample]:
        i = 0
        while True:
            yield self[i]
            i += 1

    def scene(self, index: int) -> Scene:
        return self.shapes.scene(index)

    def waves(self, start: int, count: int) -> np.ndarray:
        """float32 [count, samples], rendered on the fly."""
        return self.waves_of(range(start, start + count))

    def wave(self, index: int) -> np.ndarray:
        """float32 [samples]: sound `index` (its scene, heard, without the captions and questions)."""
        return render_sound(self.scene(index), self.cfg, self.jitter(index))

    def waves_of(self, indices) -> np.ndarray:
        """float32 [len(indices), samples]: the sounds of these indices."""
        return np.stack([self.wave(i) for i in indices])


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM WAV (what every player and `data.jsonl` reader opens)."""
    import soundfile

    soundfile.write(str(path), np.clip(wave, -1, 1), sample_rate, subtype="PCM_16", format="WAV")
