"""Speech: ShapesWorld's captions spoken by espeak-ng, in several voices, speeds and pitches.

espeak-ng is a formant synthesiser (Debian's `espeak-ng`; `make test` installs it): no weights to
download, the same audio for the same text and settings on every machine, and fast (tens of
milliseconds a caption). Utterance `i` of a seed and split says scene `i`'s caption, in a voice,
speed and pitch drawn for it; the voices split like the scenes, so a recogniser or a model can be
measured on voices it never heard. The text goes to espeak-ng on stdin, never as an argument or
through a shell, so a caption can not become an option.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

from smalto.data.shapes import Scene, ShapesConfig, ShapesWorld
from smalto.errors import SmaltoError

# espeak-ng's English voices; variants (+f2: a female voice, +m3, +klatt: another synthesiser) widen them.
VOICES = {"train": ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us+f2", "en-gb+m3"),
          "heldout": ("en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us+klatt")}
ESPEAK_RATE = 22050  # what espeak-ng writes


def espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise SmaltoError("espeak-ng is not installed (Debian: apt-get install espeak-ng; `make test` installs it)")
    return path


def speak(text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50, sample_rate: int = 16000) -> np.ndarray:
    """`text` spoken by espeak-ng: float32 mono [samples] at `sample_rate`."""
    import soundfile
    from scipy.signal import resample_poly

    if not 80 <= speed <= 450 or not 0 <= pitch <= 99:
        raise SmaltoError(f"speech: speed must be 80 .. 450 words a minute and pitch 0 .. 99, got {speed}, {pitch}")
    try:
        done = subprocess.run([espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout"],
                              input=text.encode(), capture_output=True, timeout=60, check=True)
    except subprocess.CalledProcessError as e:
        said = e.stderr.decode(errors="replace").strip()
        raise SmaltoError(f"espeak-ng failed for voice {voice!r}: {said}") from None
    except subprocess.TimeoutExpired:
        raise SmaltoError(f"espeak-ng took over a minute to say {len(text)} characters") from None
    wave, rate = soundfile.read(io.BytesIO(done.stdout), dtype="float32")
    g = np.gcd(rate, sample_rate)
    return resample_poly(wave, sample_rate // g, rate // g).astype(np.float32)


@dataclass(frozen=True)
class SpeechConfig:
    sample_rate: int = 16000
    speeds: tuple[int, int] = (130, 200)  # words a minute, drawn uniformly
    pitches: tuple[int, int] = (25, 75)
    world: ShapesConfig = ShapesConfig()


@dataclass(frozen=True)
class Utterance:
    wave: np.ndarray  # float32 [samples] at cfg.sample_rate
    text: str
    voice: str
    speed: int
    pitch: int
    scene: Scene


class SpeechWorld:
    """Utterance `i` says the canonical caption of scene `i` of the ShapesWorld with the same seed
    and split ("train" and "all" speak in the training voices, "heldout" and "unseen" scenes too;
    `voices="heldout"` speaks in the voices training never heard)."""

    def __init__(self, cfg: SpeechConfig | None = None, seed: int = 0, split: str = "train", voices: str = "train"):
        if voices not in VOICES:
            raise SmaltoError(f"speech: voices must be one of {', '.join(VOICES)}, got {voices!r}")
        self.cfg, self.voices = cfg or SpeechConfig(), VOICES[voices]
        self.shapes = ShapesWorld(self.cfg.world, seed, split)
        self.split_of_voices = voices

    def settings(self, index: int) -> tuple[str, int, int]:
        rng = np.random.default_rng([self.shapes.seed, ShapesWorld.SPLITS.index(self.shapes.split), index, 37,
                                     list(VOICES).index(self.split_of_voices)])
        voice = self.voices[int(rng.integers(len(self.voices)))]
        return voice, int(rng.integers(*self.cfg.speeds, endpoint=True)), int(rng.integers(*self.cfg.pitches,
                                                                                           endpoint=True))

    def __getitem__(self, index: int) -> Utterance:
        sample = self.shapes[index]
        voice, speed, pitch = self.settings(index)
        text = sample.captions[0]
        return Utterance(speak(text, voice, speed, pitch, self.cfg.sample_rate), text, voice, speed, pitch,
                         sample.scene)
