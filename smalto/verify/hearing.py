"""Waveform -> scene graph: the verifier for ShapesWorld's sounds (`smalto.data.sounds`).

Each cell's slot is measured on its sustained middle (past the attack, before the release) by a
Hann-windowed DFT at exactly the frequencies that matter, not an FFT's bins:

- the fundamental: the strongest of the six pitches (within an octave, so never a harmonic);
  weaker than `SILENCE` is an empty cell;
- size: the fundamental's amplitude against the geometric mean of the small and large levels;
- shape: the 2nd and 3rd harmonics relative to it: a sine has neither, a square wave only odd
  ones (1/3 at the 3rd), a sawtooth both (1/2, 1/3); the nearest of the three is the timbre.

What comes back is a `Scene`, compared with `==` like the picture verifier's. `log_mel` is the
spectrogram the codec's mel distance and the speech recogniser (`verify.recogniser`) read.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from smalto.data.sounds import PITCHES, TIMBRES, SoundConfig, harmonic
from smalto.data.shapes import GRID, Obj, Scene

SILENCE = 0.05  # fundamental amplitude below which a slot is an empty cell (a small note's is 0.135 at least)


def _window(cfg: SoundConfig) -> tuple[int, int]:
    """The sustained middle of a slot, in samples from its start."""
    start = round((cfg.attack + 0.01) * cfg.sample_rate)
    end = cfg.slot_samples - round((cfg.gap + cfg.release + 0.005) * cfg.sample_rate)
    return start, end


def amplitudes(segment: np.ndarray, freqs: np.ndarray, sample_rate: int) -> np.ndarray:
    """The amplitude of a sinusoid at each frequency in a segment (Hann-windowed DFT at that frequency)."""
    n = len(segment)
    w = np.hanning(n)
    basis = np.exp(-2j * np.pi * np.outer(freqs, np.arange(n)) / sample_rate)
    return 2 * np.abs(basis @ (w * segment)) / w.sum()


def _prototypes(cfg: SoundConfig) -> dict[str, np.ndarray]:
    return {shape: np.array([harmonic(TIMBRES[shape], 2), harmonic(TIMBRES[shape], 3)]) for shape in cfg.world.shapes}


class _Ear(NamedTuple):
    """What a world's sounds are measured against."""
    colors: list[str]
    pitches: np.ndarray  # each colour's fundamental, Hz
    sizes: list[str]  # quiet to loud
    threshold: float  # between the sizes' amplitudes: their geometric mean
    prototypes: dict[str, np.ndarray]  # each timbre's 2nd and 3rd harmonics


def _ear(cfg: SoundConfig) -> _Ear:
    levels = dict(cfg.loudness)
    sizes = sorted(levels, key=levels.get)
    colors = list(cfg.world.colors)
    return _Ear(colors, np.array([PITCHES[c] for c in colors]), sizes,
                float(np.sqrt(levels[sizes[0]] * levels[sizes[-1]])), _prototypes(cfg))


def _segments(wave: np.ndarray, cfg: SoundConfig) -> list[np.ndarray | None]:
    """Each cell's sustained middle (None past the wave's end)."""
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    lo, hi = _window(cfg)
    cut = [wave[cell * cfg.slot_samples:][lo:hi] for cell in range(GRID * GRID)]
    return [s if len(s) == hi - lo else None for s in cut]


def parse_sound(wave: np.ndarray, cfg: SoundConfig | None = None) -> Scene:
    """The scene a sound of `cfg`'s world says; a slot past the wave's end is an empty cell."""
    cfg = cfg or SoundConfig()
    colors, pitches, sizes, threshold, prototypes = _ear(cfg)
    objects = []
    for cell, segment in enumerate(_segments(wave, cfg)):
        if segment is None:
            break
        fundamentals = amplitudes(segment, pitches, cfg.sample_rate)
        k = int(fundamentals.argmax())
        a1 = fundamentals[k]
        if a1 < SILENCE:
            continue
        overtones = amplitudes(segment, pitches[k] * np.array([2.0, 3.0]), cfg.sample_rate) / a1
        shape = min(prototypes, key=lambda s: float(np.abs(prototypes[s] - overtones).sum()))
        objects.append(Obj(cell // GRID, cell % GRID, shape, colors[k], sizes[-1] if a1 >= threshold else sizes[0]))
    return Scene(tuple(objects))


def mel_filters(sample_rate: int, n_fft: int, n_mels: int = 64) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters on the HTK mel scale, up to Nyquist."""
    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    edges = 700 * (10 ** (np.linspace(0, mel(sample_rate / 2), n_mels + 2) / 2595) - 1)
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid))).astype(np.float32)


def log_mel(wave, sample_rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 64):
    """log10 mel energies of a waveform tensor [..., samples] -> [..., n_mels, frames] (Hann windows)."""
    import torch

    wave = torch.as_tensor(wave, dtype=torch.float32)
    spec = torch.stft(wave.reshape(-1, wave.shape[-1]), n_fft, hop, window=torch.hann_window(n_fft),
                      return_complex=True).abs().pow(2)
    mels = torch.log10(torch.as_tensor(mel_filters(sample_rate, n_fft, n_mels)) @ spec + 1e-5)
    return mels.reshape(*wave.shape[:-1], *mels.shape[-2:])


CHORD_FLOOR = 0.02  # a chord note's fundamental at the least: a small chord's three notes are 0.045 each
CHORD_SHARE = 0.5  # a chord's notes share its loudness equally: a weaker pitch is leakage, not a note


def parse_chords(wave: np.ndarray, cfg: SoundConfig | None = None) -> tuple:
    """The chords a progression's sound holds (`data.chords`), one a slot (None: a rest): its notes
    are the pitches within `CHORD_SHARE` of the slot's strongest, their timbre the nearest
    prototype of their 2nd and 3rd harmonics (one timbre a chord: the notes' votes summed), their
    size the notes' amplitudes summed against the geometric mean of the sizes."""
    from smalto.data.chords import Chord

    cfg = cfg or SoundConfig()
    colors, pitches, sizes, threshold, prototypes = _ear(cfg)
    out = []
    for segment in _segments(wave, cfg):
        if segment is None:
            out.append(None)
            continue
        fundamentals = amplitudes(segment, pitches, cfg.sample_rate)
        strongest = fundamentals.max()
        if strongest < CHORD_FLOOR:
            out.append(None)
            continue
        held = np.flatnonzero(fundamentals >= CHORD_SHARE * strongest)
        miss = dict.fromkeys(prototypes, 0.0)
        for k in held:
            overtones = amplitudes(segment, pitches[k] * np.array([2.0, 3.0]), cfg.sample_rate) / fundamentals[k]
            for shape, prototype in prototypes.items():
                miss[shape] += float(np.abs(prototype - overtones).sum())
        total = float(fundamentals[held].sum())
        out.append(Chord(frozenset(colors[k] for k in held), min(miss, key=miss.get),
                         sizes[-1] if total >= threshold else sizes[0]))
    return tuple(out)
