"""Train the audio codec on ShapesWorld's sounds (`smalto tokenizer train-audio`).

The output directory is the tokenizer directory it started from (text, image, video: copied
unchanged) plus:

    audio.safetensors, audio.json   the codec's weights and config
    audio_train.json                its training config and final metrics
    audio_log.jsonl                 one line per logged step
    audio_loss.png

Loss: a multi-resolution STFT loss (log magnitudes and spectral convergence at three window
sizes: what a sound is heard as, phase aside) plus the waveform's L1 (the phase, which SI-SDR
scores) and the quantizer's commitment. No adversarial loss: minutes on two cores do not pay for
a discriminator; the figures below say what that costs.

Metrics (`evaluate_audio_codec`), on sounds of another seed: SI-SDR, mel distance, STOI (pystoi),
tokens a second, codebook usage per level, and verifier agreement: the share of sounds whose
reconstruction `smalto.verify.hearing` reads as the original's scene.
"""

from __future__ import annotations

import itertools
import json
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import torch

from smalto import atomic
from smalto.data.sounds import SoundConfig, SoundWorld
from smalto.errors import SmaltoError
from smalto.options import SAMPLING, Range
from smalto.plots import loss_curve
from smalto.progress import bar as progress_bar
from smalto.tokenizers import load_tokenizers
from smalto.tokenizers.audio import AudioCodec, AudioCodecConfig
from smalto.tokenizers.evaluate import code_stats
from smalto.training.schedule import cosine_lr
from smalto.verify.hearing import log_mel, parse_sound

RESOLUTIONS = ((256, 64), (512, 128), (1024, 256))  # (window, hop) of the STFT loss
# Added to magnitudes before the log: ~40 dB below a note's peak bin, so the loss does not ask silence
# to be reproduced to the last bit.
FLOOR = 0.3


@dataclass
class AudioTrainConfig:
    steps: int = 1500
    batch_size: int = 16
    crop_slots: int = 4  # training crops: this many cells' slots (0.6 s), cut on slot boundaries
    lr: float = 2e-3
    warmup: int = 50
    # Steps the autoencoder trains unquantised first; then every level's codebook is seeded on its
    # latents. (Quantised from the start, the untrained encoder's latents all fall on one code and
    # the decoder learns to ignore the codes.)
    unquantised: int = 100
    wave_weight: float = 3.0  # the waveform L1's weight beside the spectral loss
    # The codec is the model's ears, so it hears every composition, the held-out ones too (as the image
    # tokenizer sees them): trained on "train" only, it heard the held-out red triangles as squares.
    split: str = "all"
    # Share of each batch that is speech (espeak-ng captions, training voices): heard only as notes,
    # the codec turns a spoken caption into tones (67 % word error through it).
    speech: float = 0.0
    speech_pool: int = 1500  # utterances spoken once and cropped at random (espeak-ng is slower than a step)
    seed: int = 0
    log_every: int = 25
    eval_sounds: int = 200
    codec: AudioCodecConfig = field(default_factory=AudioCodecConfig)

    RANGES: ClassVar[dict[str, Range]] = {
        **dict.fromkeys(("steps", "batch_size", "log_every", "eval_sounds"), Range(1, integer=True)),
        "crop_slots": Range(1, 9, integer=True), "unquantised": Range(0, integer=True),
        "lr": Range(0, low_open=True), "warmup": Range(0, integer=True), "wave_weight": Range(0),
        "speech": Range(0, 1), "speech_pool": Range(1, integer=True),
        "seed": SAMPLING["seed"]}

    def __post_init__(self) -> None:
        for name, valid in self.RANGES.items():
            valid.check(getattr(self, name), name)
        if self.split not in SoundWorld.SPLITS:
            raise SmaltoError(f"split must be one of {', '.join(SoundWorld.SPLITS)}, got {self.split!r}")


def sound_config(codec: AudioCodecConfig) -> SoundConfig:
    cfg = SoundConfig(sample_rate=codec.sample_rate)
    if cfg.slot_samples % codec.hop:
        raise SmaltoError(f"audio codec: a frame of {codec.hop} samples does not divide a ShapesWorld slot of "
                          f"{cfg.slot_samples} samples (choose strides whose product divides it)")
    return cfg


def _magnitudes(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=x.device)
    return torch.stft(x, n_fft, hop, window=window, return_complex=True).abs()


def stft_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT loss: spectral convergence plus log-magnitude L1, at each resolution."""
    total = y.new_zeros(())
    for n_fft, hop in RESOLUTIONS:
        my, mx = _magnitudes(y, n_fft, hop), _magnitudes(x, n_fft, hop)
        total = total + torch.linalg.norm(my - mx) / torch.linalg.norm(mx).clamp_min(1e-7)
        total = total + (torch.log(my + FLOOR) - torch.log(mx + FLOOR)).abs().mean()
    return total / len(RESOLUTIONS)


def mel_distance(y: np.ndarray, x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per sound: the mean absolute difference of log10 mel energies (1024-sample windows)."""
    return (log_mel(y, sample_rate) - log_mel(x, sample_rate)).abs().mean(dim=(-2, -1)).numpy()


def si_sdr(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Scale-invariant signal-to-distortion ratio in dB, per row of [B, samples]."""
    x = x - x.mean(-1, keepdims=True)
    y = y - y.mean(-1, keepdims=True)
    scale = (y * x).sum(-1, keepdims=True) / np.maximum((x * x).sum(-1, keepdims=True), 1e-10)
    target = scale * x
    return 10 * np.log10(np.maximum((target ** 2).sum(-1), 1e-10) / np.maximum(((y - target) ** 2).sum(-1), 1e-10))


@dataclass
class AudioMetrics:
    sounds: int
    seconds: float  # each
    si_sdr: float  # dB, mean
    mel_distance: float  # mean |log10 mel| difference
    stoi: float  # pystoi, mean (0..1)
    tokens_per_second: float
    usage: list[float]  # % of each level's codebook used
    perplexity: list[float]
    verifier_agreement: float  # % of sounds the verifier reads as the original's scene
    truth_agreement: float  # % read as the scene they were rendered from
    levels_agreement: list[float] = field(default_factory=list)  # the same, decoding levels 1 .. l only
    realtime: float = 0.0  # seconds of sound encoded and decoded per second of compute (batches of 50)
    heldout_agreement: float | None = None  # verifier agreement on sounds with a held-out pair in each
    silence: dict = field(default_factory=dict)  # the trivial baseline: every sound decoded as silence
    # Speech through the codec: the recogniser's word error (%) on unseen captions in training voices,
    # decoding levels 1 .. l, and on the originals (what the recogniser itself misses).
    speech_word_error: list[float] = field(default_factory=list)
    speech_word_error_originals: float | None = None

    def table(self) -> str:
        rows = [("sounds", f"{self.sounds} x {self.seconds:.2f} s"), ("SI-SDR", f"{self.si_sdr:.2f} dB"),
                ("mel distance", f"{self.mel_distance:.3f}"), ("STOI", f"{self.stoi:.3f}"),
                ("tokens / second", f"{self.tokens_per_second:g}"),
                ("codebook usage", " ".join(f"{u:.0f}%" for u in self.usage) + " (per level)"),
                ("verifier agreement", f"{self.verifier_agreement:.2f} %" + (
                    "" if self.heldout_agreement is None else f" ({self.heldout_agreement:.2f} % held-out pairs)")),
                ("by levels kept", " ".join(f"{a:.1f}%" for a in self.levels_agreement)),
                ("real time", f"{self.realtime:.0f}x (encode + decode)"),
                *([("speech word error", " ".join(f"{e:.1f}%" for e in self.speech_word_error)
                    + f" by levels kept (originals {self.speech_word_error_originals:.1f}%)")]
                  if self.speech_word_error else []),
                ("silence baseline", ", ".join(f"{k} {v:g}" for k, v in self.silence.items()))]
        return "\n".join(f"{k:<20}{v}" for k, v in rows)


def _stoi(x: np.ndarray, y: np.ndarray, sample_rate: int) -> float:
    """Mean STOI; pystoi warns (and scores 1e-5) when a reconstruction leaves too few frames above
    its silence threshold: a score, said once in the figures, not a warning per sound."""
    from pystoi import stoi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.mean([stoi(a, b, sample_rate) for a, b in zip(x, y)]))


def evaluate_audio_codec(codec: AudioCodec, world: SoundWorld, n: int, batch_size: int = 50
                         ) -> tuple[AudioMetrics, np.ndarray, np.ndarray]:
    """Metrics on sounds 0 .. n-1 of `world`, the originals and their reconstructions."""
    codec.eval()
    originals, recons, codes = [], [], []
    by_levels: list[list[bool]] = [[] for _ in range(codec.cfg.levels)]
    coding = 0.0
    for start in range(0, n, batch_size):
        waves = world.waves(start, min(batch_size, n - start))
        started = time.perf_counter()
        c = codec.encode(waves)
        recon = codec.decode(c)[:, :waves.shape[1]]
        coding += time.perf_counter() - started
        originals.append(waves), recons.append(recon), codes.append(c.cpu())
        for level in range(codec.cfg.levels):
            partial = recon if level == codec.cfg.levels - 1 else codec.decode(c[:, :level + 1])[:, :waves.shape[1]]
            by_levels[level] += [parse_sound(p, world.cfg) == parse_sound(o, world.cfg) for p, o in zip(partial, waves)]
    x, y, c = np.concatenate(originals), np.concatenate(recons), torch.cat(codes)
    stats = [code_stats(c[:, level], codec.codebook_size) for level in range(codec.cfg.levels)]
    sr = codec.cfg.sample_rate
    quiet = np.zeros_like(x)
    silence = {"mel_distance": round(float(mel_distance(quiet, x, sr).mean()), 3),
               "verifier_agreement": 100 * float(np.mean([parse_sound(q, world.cfg) == parse_sound(o, world.cfg)
                                                          for q, o in zip(quiet, x)]))}
    metrics = AudioMetrics(
        n, x.shape[1] / sr, float(si_sdr(y, x).mean()), float(mel_distance(y, x, sr).mean()),
        _stoi(x, y, sr), codec.cfg.tokens_per_second,
        [round(u, 1) for u, _ in stats], [round(p, 1) for _, p in stats],
        100 * float(np.mean(by_levels[-1])),
        100 * float(np.mean([parse_sound(r, world.cfg) == world.scene(i) for i, r in enumerate(y)])),
        [round(100 * float(np.mean(a)), 1) for a in by_levels], realtime=x.size / sr / coding, silence=silence)
    return metrics, x, y


def speech_word_error(codec: AudioCodec, n: int, seed: int, voices: str = "train") -> tuple[list[float], float]:
    """The recogniser's word error (%) on `n` spoken captions of unseen scenes (in the training
    voices, or `voices="heldout"`) after the codec's round trip, decoding levels 1 .. l; and on the
    originals."""
    from smalto.data.speech import SpeechConfig, SpeechWorld
    from smalto.verify.recogniser import Recogniser, word_errors, words

    hear = Recogniser.load()
    said = [SpeechWorld(SpeechConfig(sample_rate=codec.cfg.sample_rate), seed, "unseen", voices)[i] for i in range(n)]
    total = sum(len(words(u.text)) for u in said)

    def error(waves: list[np.ndarray]) -> float:
        return round(100 * sum(word_errors(words(h), words(u.text)) for h, u in zip(hear.transcribe(waves), said))
                     / total, 2)

    codec.eval()
    codes = [codec.encode(torch.tensor(u.wave)[None]) for u in said]
    by_levels = [error([codec.decode(c[:, :level])[0, :len(u.wave)] for c, u in zip(codes, said)])
                 for level in range(1, codec.cfg.levels + 1)]
    return by_levels, error([u.wave for u in said])


def speech_crops(cfg: AudioTrainConfig, samples: int, sample_rate: int, hop: int) -> Iterator[np.ndarray]:
    """Endless crops of `samples` from a pool of spoken captions (training scenes and voices),
    starting on a frame boundary; a shorter utterance is padded with silence."""
    from smalto.data.speech import SpeechConfig, SpeechWorld

    world = SpeechWorld(SpeechConfig(sample_rate=sample_rate), cfg.seed, "train")
    pool = [world[i].wave for i in progress_bar(range(cfg.speech_pool), desc="speaking", unit="caption")]
    rng = np.random.default_rng([cfg.seed, 11])
    while True:
        wave = pool[int(rng.integers(len(pool)))]
        at = int(rng.integers(max(len(wave) - samples, 0) // hop + 1)) * hop
        crop = wave[at:at + samples]
        yield np.pad(crop, (0, samples - len(crop)))


def crops(world: SoundWorld, cfg: AudioTrainConfig) -> Iterator[torch.Tensor]:
    """Endless batches of `crop_slots` consecutive slots from random sounds, cut on slot boundaries
    (where notes start, as in a whole sound); `cfg.speech` of each batch is speech instead."""
    rng = np.random.default_rng([cfg.seed, 7])
    slot, slots = world.cfg.slot_samples, 9 - cfg.crop_slots + 1
    spoken = round(cfg.speech * cfg.batch_size)
    speech = speech_crops(cfg, cfg.crop_slots * slot, world.cfg.sample_rate, cfg.codec.hop) \
        if spoken else None
    for start in itertools.count(0, cfg.batch_size - spoken):
        waves = world.waves(start, cfg.batch_size - spoken)
        at = rng.integers(slots, size=len(waves)) * slot
        batch = [w[a:a + cfg.crop_slots * slot] for w, a in zip(waves, at)]
        yield torch.tensor(np.stack(batch + [next(speech) for _ in range(spoken)]))


def train_audio_codec(codec: AudioCodec, batches: Iterator[torch.Tensor], cfg: AudioTrainConfig,
                      progress: bool = True) -> list[dict]:
    torch.manual_seed(cfg.seed)
    codec.train()
    opt = torch.optim.AdamW(codec.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=0.0)
    log: list[dict] = []
    start = time.perf_counter()
    bar = progress_bar(range(cfg.steps), desc="audio codec", enabled=progress, unit="step")
    for step in bar:
        lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        x = next(batches)
        if step == cfg.unquantised > 0:
            codec.quantizer.reseed()  # (with no warm-up, the first batch seeds them anyway)
        y, _, aux = codec(x, quantize=step >= cfg.unquantised)
        spectral, wave = stft_loss(y, x), (y - x).abs().mean()
        loss = spectral + cfg.wave_weight * wave + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), 1.0)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "loss": loss.item(), "stft": spectral.item(), "l1": wave.item(), "aux": aux.item(),
                   "si_sdr": float(si_sdr(y.detach().reshape(1, -1).numpy(), x.reshape(1, -1).numpy())[0]), "lr": lr,
                   "seconds": round(time.perf_counter() - start, 1)}
            log.append(row)
            bar.set_postfix(stft=f"{row['stft']:.3f}", si_sdr=f"{row['si_sdr']:.1f}")
    codec.eval()
    return log


def train_audio(out: str | Path, cfg: AudioTrainConfig, tokenizers: str | Path | None = None, force: bool = False,
                progress: bool = True, init_from: str | Path | None = None) -> AudioMetrics:
    """Train an audio codec on ShapesWorld's sounds and write it, beside the tokenizers in
    `tokenizers` (default: the shipped ones, copied unchanged), to `out`. `init_from`: a tokenizer
    directory whose codec training continues (a new schedule, no unquantised warm-up; its config
    is kept, `cfg.codec` is not read)."""
    out = Path(out)
    if out.exists() and not force:
        raise SmaltoError(f"{out}: already exists (pass --force to replace it)")
    base = load_tokenizers(tokenizers)
    torch.manual_seed(cfg.seed)
    if init_from is not None:
        codec = load_tokenizers(init_from).audio
        if codec is None:
            raise SmaltoError(f"{init_from}: has no audio codec to continue (audio.json)")
        cfg = replace(cfg, codec=codec.cfg, unquantised=0)
    else:
        codec = AudioCodec(cfg.codec)
    world_cfg = sound_config(cfg.codec)
    started = time.perf_counter()
    log = train_audio_codec(codec, crops(SoundWorld(world_cfg, cfg.seed, cfg.split), cfg), cfg, progress)
    seconds = time.perf_counter() - started
    metrics, _, _ = evaluate_audio_codec(codec, SoundWorld(world_cfg, cfg.seed + 1, "all"), cfg.eval_sounds)
    heldout, _, _ = evaluate_audio_codec(codec, SoundWorld(world_cfg, cfg.seed + 1, "heldout"), cfg.eval_sounds)
    metrics.heldout_agreement = heldout.verifier_agreement
    if cfg.speech:
        metrics.speech_word_error, metrics.speech_word_error_originals = speech_word_error(codec, 100, cfg.seed + 1)
    with atomic.directory(out, overwrite=force) as tmp:
        base.copy_to(tmp)
        codec.save(tmp)
        atomic.write_text(tmp / "audio_log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        summary = {"config": asdict(cfg), "train_seconds": round(seconds, 1), "metrics": asdict(metrics),
                   "sounds": asdict(world_cfg), **({"init_from": str(init_from)} if init_from is not None else {})}
        atomic.write_text(tmp / "audio_train.json", json.dumps(summary, indent=2) + "\n")
        atomic.write_bytes(tmp / "audio_loss.png", loss_curve(log, ["stft", "l1"], "audio codec"))
    return metrics

