"""`smalto train`: next-token prediction over the task mix, with checkpoints that resume exactly.

A run starts from fresh weights or from a checkpoint (`init_from`, fine-tuning), may freeze
parameters by name and add auxiliary losses; see docs/training.md.

The run directory holds the latest checkpoint (see smalto.checkpoint) plus:

    log.jsonl      one line per logged step (loss per task and per auxiliary loss, tokens/s, lr),
                   per evaluation, and per start or resume (parameters, trainable ones)
    loss.png       the loss curves
    samples.png    prompts drawn by the model at the last evaluation (one row per prompt)
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from smalto.progress import bar as progress_bar, write as progress_write

from smalto import atomic, precision
from smalto.adapters import AdapterConfig, attach, load_adapter, save_adapter
from smalto.checkpoint import load_checkpoint, load_optimizer, read_meta, save_checkpoint
from smalto.data.gate import MAX_PIXELS
from smalto.data.shapes import GRID, Obj, Scene, ShapesConfig, cell_patches, cell_words, world_config
from smalto.data.sounds import SoundConfig, slot_codes
from smalto.errors import SmaltoError
from smalto.format import Vocab
from smalto.format.vocab import PATTERNS, SOUND_LAYOUT
from smalto.model import PRESETS, Output, Transformer, preset
from smalto.model.config import FUSIONS, MAX_CONTEXT, ROPES, ModelConfig
from smalto.options import SAMPLING, Range
from smalto.paths import inside
from smalto.plots import loss_curve
from smalto.tokenizers import load_tokenizers
from smalto.data.tasks import TASKS, capabilities
from smalto.training.data import Batch, ExampleStream, TaskMix, data_position, stream_record
from smalto.training import dist
from smalto.training.dist import Processes, all_sum
from smalto.training.optim import OPTIMIZERS, build_optimizer
from smalto.training.schedule import cosine_lr

DEFAULT_PRESET = "shapes-tiny"
VISION_INITS = ("scratch", "tokenizer")
COMPILE_FROM = 500  # steps from which `compile=None` compiles: some minutes of training, against one of compiling
PRECISIONS = ("auto", *precision.DTYPES)

COUNT, AT_LEAST_0, POSITIVE = Range(1, integer=True), Range(0, integer=True), Range(0, low_open=True)

# An auxiliary loss: fn(model, batch, output) -> {name: scalar tensor}, added to the objective and
# logged under its name (see train).
LossFn = Callable[[Transformer, Batch, Output], dict[str, torch.Tensor]]

LAYOUTS = ("raster", "cells")  # how drawings are written (TrainConfig.layout)


@dataclass
class TrainConfig:
    preset: str | None = None  # a name in smalto.model.PRESETS; None: DEFAULT_PRESET, or init_from's model
    data: str = "shapes"  # a ShapesWorld ("shapes", "shapes-plus": smalto.data.shapes.WORLDS) or a folder
    tokenizers: str | None = None  # a tokenizer directory; None: the shipped default, or init_from's
    # Fine-tuning: model config, tokenizers and weights come from this checkpoint; the optimizer
    # and the step start afresh.
    init_from: str | None = None
    freeze: tuple[str, ...] = ()  # parameter-name patterns (fnmatch: "layers.0.*", "embed.*") left untrained
    # Train only an adapter (LoRA or prompt tuning, smalto.adapters) on init_from's frozen weights;
    # the run directory then holds the adapter, not a model.
    adapter: AdapterConfig | None = None
    steps: int = 2000
    batch_size: int = 32  # examples per micro-batch, over all processes
    grad_accum: int = 1
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.1
    optimizer: str = "muon"  # Muon for the blocks' matrices, AdamW for the rest; or "adamw" (see training.optim)
    grad_clip: float = 1.0
    seed: int = 0
    mix: TaskMix = field(default_factory=TaskMix)
    log_every: int = 10
    eval_every: int = 500  # 0 disables periodic evaluation
    save_every: int = 500
    precision: str = "auto"  # matmuls under bf16 autocast where bf16 is native ("auto"), or "bf16" / "fp32"
    # torch.compile the forward pass and loss (their backward too): steps about 20 % faster on a
    # CPU, after a minute of compiling; None: when the run is long enough to pay that back
    # (COMPILE_FROM steps). Changes how, not what, is computed: a run may be resumed either way.
    compile: bool | None = None
    max_image_pixels: int = MAX_PIXELS  # a folder's larger images are refused before decoding
    # With several processes: shard weights and optimizer state across them (FSDP2) instead of
    # keeping a whole copy in each (DDP). Makes no difference to what is computed.
    shard: bool = False
    # Mixture of experts (smalto.model.moe): 0 keeps the dense MLP; E experts of which each token
    # uses `active_experts`, with as many active parameters as the dense preset.
    experts: int = 0
    active_experts: int = 2
    # Rotary positions ("1d", "mrope", "interleaved"; smalto.model.config) and the context in
    # tokens; None: the preset's (1d, its max_seq_len), or init_from's. Both may change from
    # init_from's: the weights do not depend on them (clips need 384 tokens of context).
    rope: str | None = None
    context: int | None = None
    # How pictures reach the model ("tokens", "projector", "xattn"; smalto.model.fusion); None:
    # tokens, or init_from's. vision_init: the ViT's stem from scratch, or the image tokenizer's
    # conv encoder with its weights ("tokenizer").
    fusion: str | None = None
    vision_init: str = "scratch"
    # How drawings are written: "raster" (an image's codes row by row) or "cells" (ShapesWorld's
    # nine cells in turn, each named in words, "2 small red circle", then its codes: an object's
    # codes follow its words wherever it lies; docs/compose.md), and a flat sound's nine time slots
    # the same way (docs/audio.md). None: raster, or init_from's.
    layout: str | None = None
    # The audio codec's residual levels each sound is written with (frame by frame, coarse to fine),
    # 1 to the codec's; None: init_from's, or all of the codec's when the mix has sound tasks. A
    # model trained without sounds grows the audio range when its mix first has them.
    sound_levels: int | None = None
    # How those levels are laid out (format.vocab.PATTERNS): "flat", a token per code; "delay", a
    # token per step carrying the finer levels of earlier frames (MusicGen); or "depth", a token per
    # frame carrying its finer levels, which a depth head predicts (Moshi); None: init_from's, or flat.
    sound_pattern: str | None = None

    # Valid values, read by __post_init__ and by the command line's flags.
    RANGES: ClassVar[dict[str, Range]] = {
        "steps": COUNT, "batch_size": COUNT, "grad_accum": COUNT, "lr": POSITIVE, "warmup": AT_LEAST_0,
        "weight_decay": Range(0), "grad_clip": POSITIVE, "seed": SAMPLING["seed"], "log_every": COUNT,
        "eval_every": AT_LEAST_0, "save_every": COUNT, "max_image_pixels": COUNT, "experts": AT_LEAST_0,
        "active_experts": COUNT, "context": Range(16, MAX_CONTEXT, integer=True),
        "sound_levels": Range(1, 32, integer=True)}
    # What a resumed run may change: how long it runs and how, not what it computes.
    MAY_CHANGE: ClassVar[tuple[str, ...]] = ("steps", "compile")
    # Fields added after runs were saved without them, with the value those runs were trained with.
    BEFORE: ClassVar[dict[str, object]] = {"optimizer": "adamw"}

    @classmethod
    def saved(cls, fields: dict) -> TrainConfig:
        """The config a run's meta.json records."""
        return cls(**(cls.BEFORE | fields))

    def __post_init__(self) -> None:
        if self.preset is None and self.init_from is None:
            self.preset = DEFAULT_PRESET
        if self.preset is not None and self.preset not in PRESETS:
            raise SmaltoError(f"unknown preset {self.preset!r} (known: {', '.join(PRESETS)})")
        for name, valid in self.RANGES.items():
            if getattr(self, name) is not None:
                valid.check(getattr(self, name), name)
        if self.rope is not None and self.rope not in ROPES:
            raise SmaltoError(f"rope must be one of {', '.join(ROPES)}, got {self.rope!r}")
        if self.fusion is not None and self.fusion not in FUSIONS:
            raise SmaltoError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.vision_init not in VISION_INITS or self.vision_init != "scratch" and self.fusion in (None, "tokens"):
            raise SmaltoError(f"vision_init must be one of {', '.join(VISION_INITS)}, and names how a new projector "
                              f"or xattn model's ViT starts (got {self.vision_init!r} with fusion {self.fusion!r})")
        if self.experts == 1 or self.experts and self.active_experts > self.experts:
            raise SmaltoError(f"experts must be 0 (dense) or at least 2, and active_experts at most experts, got "
                              f"{self.experts} and {self.active_experts}")
        if self.sound_pattern not in (None, *PATTERNS):
            raise SmaltoError(f"sound_pattern must be one of {', '.join(PATTERNS)}, got {self.sound_pattern!r}")
        if self.layout not in (None, *LAYOUTS):
            raise SmaltoError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.optimizer not in OPTIMIZERS:
            raise SmaltoError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise SmaltoError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if isinstance(self.mix, dict):
            self.mix = TaskMix(**self.mix)
        if isinstance(self.adapter, dict):
            self.adapter = AdapterConfig(**self.adapter)
        if self.adapter is not None and (self.init_from is None or self.freeze or self.shard
                                         or self.optimizer != "adamw"):
            raise SmaltoError("an adapter trains on a base model (init_from) with adamw, alone: without freeze "
                              "patterns and unsharded")
        # Paths are stored as strings, patterns as a tuple: the config goes into meta.json and back.
        self.data = str(self.data)
        self.tokenizers = None if self.tokenizers is None else str(self.tokenizers)
        self.init_from = None if self.init_from is None else str(self.init_from)
        self.freeze = (self.freeze,) if isinstance(self.freeze, str) else tuple(self.freeze)
        if not all(isinstance(p, str) and p for p in self.freeze):
            raise SmaltoError(f"freeze must list non-empty name patterns, got {list(self.freeze)!r}")


def freeze_parameters(model: torch.nn.Module, patterns: Iterable[str]) -> int:
    """Turn off the gradients of the parameters whose names match a pattern (fnmatch, e.g.
    "layers.0.*"); returns how many values stay trainable. A pattern that matches nothing is an
    error: a typo must not quietly train everything. A tied head is the embedding, so `lm_head.*`
    and `embed.*` both freeze it."""
    patterns = list(patterns)
    named = list(model.named_parameters(remove_duplicate=False))
    for pattern in patterns:
        hits = [p for name, p in named if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            examples = ", ".join(name for name, _ in named[:2] + named[-1:])
            raise SmaltoError(f"freeze: {pattern!r} matches no parameter name (names look like {examples})")
        for p in hits:
            p.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not trainable:
        raise SmaltoError(f"freeze: {', '.join(patterns)} freeze every parameter; nothing is left to train")
    return trainable


def _optimizer(model: Transformer, cfg: TrainConfig) -> torch.optim.Optimizer:
    return build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay)


def _same_tokenizers(a: Path, b: Path) -> bool:
    return all(inside(a, name, "file").read_bytes() == inside(b, name, "file").read_bytes()
               for name in ("text.json", "image.json", "image.safetensors"))


def _sound(cfg: TrainConfig, tokenizers, had: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """(frames, levels) of the sounds a run's vocabulary writes: init_from's (`had`, with
    cfg.sound_levels levels if it says: the audio range is the last, so levels are added or
    dropped at its end), or the codec's frames of a ShapesWorld scene's sound at cfg.sound_levels
    (all the codec's by default) when the run hears sounds."""
    if had is not None and cfg.sound_levels in (None, had[1]):
        return had
    if had is None and not cfg.mix.sounds and cfg.sound_levels is None:
        return None
    codec = tokenizers.audio
    if codec is None:
        raise SmaltoError(f"sounds need an audio codec beside the image tokenizer ({tokenizers.path} has no "
                          f"audio.json; `smalto tokenizer train-audio` makes one)")
    levels = codec.cfg.levels if cfg.sound_levels is None else cfg.sound_levels
    if levels > codec.cfg.levels:
        raise SmaltoError(f"sound_levels {levels}: the audio codec in {tokenizers.path} has {codec.cfg.levels}")
    return SoundConfig(sample_rate=codec.cfg.sample_rate).samples // codec.cfg.hop, levels


def _grown(model: Transformer, size: int) -> Transformer:
    """The model with a vocabulary of `size` ids: its embeddings (and head) kept up to `size`, any
    new rows drawn as a fresh model's are, so that ids it never saw start where new ids would."""
    grown = Transformer(replace(model.cfg, vocab_size=size))
    state = model.state_dict()
    for key in ("embed.weight", "lm_head.weight"):
        if key in state:
            rows = grown.state_dict()[key].clone()
            kept = min(size, state[key].shape[0])
            rows[:kept] = state[key][:kept]
            state[key] = rows
    grown.load_state_dict(state)
    return grown


def _new_model(cfg: TrainConfig):
    """(model, vocab, tokenizers) for a new run: fresh weights, or init_from's (checked against what
    the config names)."""
    torch.manual_seed(cfg.seed)
    shape = {k: v for k, v in (("rope", cfg.rope), ("max_seq_len", cfg.context)) if v is not None}
    if cfg.init_from is None:
        tokenizers = load_tokenizers(cfg.tokenizers)
        image = tokenizers.image.cfg
        fused = {} if cfg.fusion in (None, "tokens") else dict(
            fusion=cfg.fusion, image_size=image.image_size, patch=image.downsample,
            vision_encoder=asdict(image) if cfg.vision_init == "tokenizer" else None)
        model_cfg = preset(cfg.preset, 1, cfg.experts, cfg.active_experts, **shape, **fused)
        vocab = Vocab.from_tokenizers(tokenizers, model_cfg.position_rule, _sound(cfg, tokenizers),
                                      cfg.sound_pattern or "flat")
        model = Transformer(_depth_config(replace(model_cfg, vocab_size=vocab.size), vocab))
        if model.cfg.vision_encoder is not None:
            model.vision.stem[0].load_state_dict(tokenizers.image.encoder.state_dict())
        return model, vocab, tokenizers
    model, vocab, tokenizers, _ = load_checkpoint(cfg.init_from, fusion=cfg.fusion)
    if cfg.preset is not None and preset(cfg.preset, vocab.size, cfg.experts, cfg.active_experts) != model.cfg:
        raise SmaltoError(f"preset {cfg.preset!r} contradicts init_from {cfg.init_from} (a {model.cfg.n_layers}-layer, "
                          f"{model.cfg.dim}-wide model); leave the preset out to fine-tune the checkpoint's")
    if cfg.tokenizers is not None and not _same_tokenizers(load_tokenizers(cfg.tokenizers).path, tokenizers.path):
        raise SmaltoError(f"tokenizers {cfg.tokenizers} are not the ones init_from {cfg.init_from} was trained with; "
                          f"leave them out to use the checkpoint's")
    if cfg.tokenizers is not None:  # the same text and image tokenizers, perhaps with a video tokenizer added
        tokenizers = load_tokenizers(cfg.tokenizers)
    sound, pattern = _sound(cfg, tokenizers, vocab.sound), cfg.sound_pattern or vocab.pattern
    old = vocab
    if shape or cfg.tokenizers is not None or sound != vocab.sound or pattern != vocab.pattern:
        reshaped = Transformer(replace(model.cfg, **shape))
        reshaped.load_state_dict(model.state_dict())
        # (the same ids in another pattern: the weights fit, and what was learned carries over)
        rebuilt = Vocab.from_tokenizers(tokenizers, reshaped.cfg.position_rule, sound, pattern)
        layouts = {k: m for k, m in vocab.modalities.items() if m.blocks and m.draws != "audio"}
        model, vocab = _grown(reshaped, rebuilt.size), replace(rebuilt, modalities={**rebuilt.modalities, **layouts})
        if slots := next((m for m in old.modalities.values() if m.draws == "audio"), None):  # (still drawn so)
            if pattern != "flat":
                raise SmaltoError(f"init_from {cfg.init_from} draws sounds in the cells layout, which writes "
                                  f"their levels flat; sound_pattern {pattern!r} can not")
            vocab = vocab.with_layout("slots", "audio", slot_codes(*sound), slots.words, slots.lexicon, slots.open)
    return _with_depth_head(model, vocab), vocab, tokenizers


def _depth_config(model_cfg: ModelConfig, vocab: Vocab) -> ModelConfig:
    """The model's config with a depth head for the vocabulary's sounds if they are in the depth
    pattern (their finer levels), and none otherwise."""
    if vocab.pattern != "depth" or vocab.sound[1] < 2:
        return replace(model_cfg, depth_levels=0)
    levels = vocab.sound[1]
    return replace(model_cfg, depth_levels=levels - 1, depth_codes=vocab.ranges["audio"].size // levels,
                   depth_start=vocab.level_span("audio", 1)[0])


def _with_depth_head(model: Transformer, vocab: Vocab) -> Transformer:
    """`model` with the depth head `_depth_config` says: one added with fresh weights when its sounds
    take the depth pattern now, taken off when they leave it; every other weight kept."""
    cfg = _depth_config(model.cfg, vocab)
    if cfg == model.cfg:
        return model
    fitted = Transformer(cfg)
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("depth.")}
    missing, unexpected = fitted.load_state_dict(kept, strict=False)
    assert not unexpected and all(k.startswith("depth.") for k in missing), (missing, unexpected)
    return fitted


def _drawing_layout(vocab: Vocab, cfg: TrainConfig, tokenizers, fusion: str) -> Vocab:
    """The vocabulary drawing as cfg.layout says: "cells" adds ShapesWorld's cell layout for
    pictures (`Vocab.with_layout`) and, when it has flat sounds, for sounds: the same words
    before each cell's time slot ("slots"). A checkpoint's layouts are kept, and cannot be taken
    back to raster; "cells" on a checkpoint with only the picture layout adds the sound's."""
    laid_out, world = vocab.drawn("image") != "image", world_config(cfg.data, tokenizers.image.cfg.image_size)
    if cfg.layout == "raster" and laid_out:
        raise SmaltoError(f"init_from {cfg.init_from} draws in the cells layout; leave layout out to keep it")
    if world is None and (laid_out or cfg.layout == "cells"):
        raise SmaltoError("the cells layout writes ShapesWorld's cells: it needs ShapesWorld data, not a folder")
    if cfg.layout != "cells":
        return vocab
    words, lexicon = _cell_lexicon(world, tokenizers)
    if not laid_out:
        vocab = vocab.with_layout("cells", "image", cell_patches(world, tokenizers.image.cfg.grid), words, lexicon)
    if vocab.sound and vocab.drawn("audio") == "audio":
        if vocab.pattern != "flat":
            raise SmaltoError(f"the cells layout writes a sound's levels flat, not {vocab.pattern!r} "
                              f"(sound_pattern flat, or layout raster for delayed sounds)")
        if fusion == "xattn":
            raise SmaltoError("an xattn model writes <|reserved_0|> for its pictures, the token that opens a sound "
                              "drawn in the cells layout: draw its sounds flat (layout raster)")
        vocab = vocab.with_layout("slots", "audio", slot_codes(*vocab.sound), words, lexicon, SOUND_LAYOUT)
    return vocab


def _cell_lexicon(world: ShapesConfig, tokenizers) -> tuple[int, tuple[tuple[tuple[int, ...], ...], ...]]:
    """(words a cell's description takes, what each word of each cell may be: its number, one id,
    then any size, colour, shape or "-") for ShapesWorld's cells under this text tokenizer."""
    things = [(shape, color, size) for size, _ in world.sizes for color in world.colors for shape in world.shapes]
    said = [[tokenizers.text.encode(cell_words(Scene((Obj(k // GRID, k % GRID, *thing),), ()))[k]) for thing in things]
            + [tokenizers.text.encode(cell_words(Scene((), ()))[k])] for k in range(GRID * GRID)]
    widths = {len(ids) for cell in said for ids in cell}  # (every cell's every possible words)
    if len(widths) > 1:
        raise SmaltoError(f"layout 'cells' needs every cell's words to be as many tokens; this text tokenizer "
                          f"makes them {' or '.join(map(str, sorted(widths)))} tokens long")
    words = widths.pop()
    return words, tuple(tuple(tuple(sorted({ids[j] for ids in cell})) for j in range(words)) for cell in said)


def task_losses(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, tasks: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean cross-entropy over trained tokens, and the same per task (for the log)."""
    loss_sum, stats = token_losses(logits, targets, mask, tasks)
    return loss_sum / stats[0].clamp_min(1), task_means(stats)


def depth_frames(targets: torch.Tensor, carried: torch.Tensor, mask: torch.Tensor, levels: int) -> torch.Tensor:
    """What a depth head reads in training (`Transformer.forward(depth=)`): per position, the ids of
    the frame it predicts, levels 0 .. levels-1 (its target token, then what the target carries),
    -1 where it predicts no sound frame. carried [B, T, width], `token_losses`'."""
    held = (carried[..., 1] >= 0) & mask
    return torch.cat([targets[..., None], carried[..., 1:levels]], -1).masked_fill(~held[..., None], -1)


def token_losses(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, tasks: torch.Tensor,
                 carried: torch.Tensor | None = None, spans: Sequence[tuple[int, int]] = (),
                 depth: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed cross-entropy over trained tokens, and (detached) [tokens, loss sum, then per
    task tokens and loss sum]: sums, so that several processes' batches add up to one batch's.

    carried [B, L, width]: the codes each target token carries (a stepped sound's finer levels,
    -1 where none). Delay pattern: each predicted from the same logits among its level's ids
    (`spans[k]`: level k's), as MusicGen's parallel heads: the head's rows for level k are that
    level's head. Depth pattern: from the depth head's logits, `depth` [N, width - 1, codes] for
    the N positions whose target carries codes, in row-major order (`Output.depth` given
    `depth_frames`; its slot j is level j + 1, local to that level's span)."""
    per_token = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
    per_token = per_token * mask
    counts = mask.long()
    if depth is not None:
        frames = (carried[..., 1] >= 0) & mask  # (as `depth_frames` chose them)
        finer = carried[frames][:, 1:1 + depth.shape[-2]]  # [N, levels]
        starts = torch.tensor([start for start, _ in spans[1:1 + depth.shape[-2]]], device=finer.device)
        local = (finer - starts).clamp(0, depth.shape[-1] - 1)
        picked = depth.float().log_softmax(-1).gather(-1, local[..., None]).squeeze(-1) * (finer >= 0)
        per_token = per_token - torch.zeros_like(per_token).masked_scatter(frames, picked.sum(-1))
        counts = counts + torch.zeros_like(counts).masked_scatter(frames, (finer >= 0).sum(-1))
    elif carried is not None:
        for k, (start, stop) in enumerate(spans):
            held = (carried[..., k] >= 0) & mask
            logp = logits[..., start:stop].float().log_softmax(-1)
            picked = logp.gather(-1, (carried[..., k] - start).clamp(0, stop - start - 1)[..., None]).squeeze(-1)
            per_token = per_token - picked * held
            counts = counts + held
    loss_sum = per_token.sum()
    with torch.no_grad():
        stats = [counts.sum(), loss_sum.detach()]
        for i in range(len(TASKS)):
            rows = tasks == i
            stats += [counts[rows].sum(), per_token[rows].sum()]
    return loss_sum, torch.stack([x.float() for x in stats])


def task_means(stats: torch.Tensor) -> dict[str, float]:
    """The per-task mean losses of `token_losses`' stats (tasks with no trained token left out)."""
    return {name: float(stats[3 + 2 * i] / stats[2 + 2 * i]) for i, name in enumerate(TASKS) if stats[2 + 2 * i] > 0}


def train(out: str | Path, cfg: TrainConfig, resume: bool = False, progress: bool = True,
          evaluate_fn=None, pause_at: int | None = None, losses: Sequence[LossFn] = (),
          processes: Processes = Processes()) -> list[dict]:
    """Train (or resume) a run in `out`; returns the log.

    `pause_at` stops early at that step with a checkpoint, so a long schedule can be split across
    sessions (`--resume` continues it exactly as if it had not stopped).

    `evaluate_fn(model, vocab, tokenizers) -> (metrics dict, PNG bytes)` runs every eval_every
    steps: the metrics are logged, the PNG is kept as samples.png.

    `losses`: auxiliary objectives, each `fn(model, batch, output) -> {name: scalar tensor}` on the
    batch as the model saw it; every term is added to the next-token loss and logged by name (the
    model's own `output.aux_loss` is added too, and logged as "aux_loss" when it is not zero).
    Being code, they are not saved: a resumed run must be given the same ones.

    `processes` (from `dist.setup()`, under torchrun): this process's rank among world_size. The
    batch is global: each process reads its slice of it (`data_position`), the model is wrapped in
    DistributedDataParallel, and the loss is normalised by the trained tokens of all processes, so
    a run computes the same steps whatever the number of processes (up to float rounding). Only
    rank 0 evaluates, logs and writes `out`.
    """
    out = Path(out)
    rank, world_size = processes.rank, processes.world_size
    if cfg.batch_size % world_size:
        raise SmaltoError(f"batch_size {cfg.batch_size} (the global batch) must divide by the {world_size} processes")
    if world_size > 1 and not torch.distributed.is_initialized():
        raise SmaltoError("several processes need torch.distributed: start them with torchrun (see docs/training.md)")
    writer = processes.main
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log: list[dict] = []
    if resume:
        meta = read_meta(out)
        try:
            saved = TrainConfig.saved(meta["train"])
        except (KeyError, TypeError) as e:
            raise SmaltoError(f"{out / 'meta.json'}: no training config to resume from ({e})") from None
        then, now = asdict(saved), asdict(cfg)
        if changed := [k for k in then if k not in TrainConfig.MAY_CHANGE and then[k] != now[k]]:
            raise SmaltoError(f"{out}: was trained with a different config ({changed[0]} {then[changed[0]]!r}, "
                              f"not {now[changed[0]]!r}); resume with the same config (only "
                              f"{' and '.join(TrainConfig.MAY_CHANGE)} may change)")
        if cfg.adapter is None:
            model, vocab, tokenizers, meta = load_checkpoint(out)
        else:
            model, vocab, tokenizers, _ = load_checkpoint(cfg.init_from)
            meta = load_adapter(model, vocab, out, trainable=True)
        start = meta["step"]
        log = [json.loads(line) for line in inside(out, "log.jsonl", "file").read_text().splitlines() if line]
        log = [r for r in log if r["step"] < start]
    else:
        if writer:
            atomic.recover(out)  # a save killed half-way must not look like an empty run directory
            if out.exists() and any(out.iterdir()):
                raise SmaltoError(f"{out}: already exists; pass --resume to continue it or choose another --out")
        model, vocab, tokenizers = _new_model(cfg)
        vocab = _drawing_layout(vocab, cfg, tokenizers, model.cfg.fusion)
        start = 0
    if cfg.adapter is not None and not resume:
        attach(model, cfg.adapter, cfg.seed)
    trainable = freeze_parameters(model, cfg.freeze)
    total = sum(p.numel() for p in model.parameters())
    log.append({"step": start, "params": total, "trainable": trainable})
    if progress and writer:
        progress_write(f"training {trainable:,} of {total:,} parameters"
                       + (f" (frozen: {', '.join(cfg.freeze)})" if cfg.freeze else ""))
    model.to(device).train()
    sharded = cfg.shard and world_size > 1
    opt = _optimizer(model, cfg)
    if resume:
        load_optimizer(out, opt)
    if sharded:  # each process keeps a slice of the weights and of the optimizer state
        state = dist.by_name(model, opt) if resume else None  # by name: positions change with sharding
        dist.shard(model)
        net, opt = model, _optimizer(model, cfg)
        if resume:
            dist.scatter_optimizer(model, opt, state)
    else:  # each process keeps the whole model; DDP averages the gradients in the backward pass
        # (An expert no token was routed to in a batch takes no part in it: DDP must look for those.)
        net = DistributedDataParallel(model, find_unused_parameters=model.cfg.experts > 0) if world_size > 1 \
            else model
    stream = ExampleStream(tokenizers, vocab, cfg.data, cfg.mix, cfg.seed, max_len=model.cfg.max_seq_len,
                           max_pixels=cfg.max_image_pixels, fusion=model.cfg.fusion)
    # The streams behind the weights, so ShapesEval can tell scenes the model saw from those it
    # did not (None: init_from's were never recorded).
    earlier = read_meta(cfg.init_from).get("streams") if cfg.init_from else []
    # Weights and optimizer state stay float32; matmuls run in bf16 where the hardware has it.
    bf16 = precision.resolve(cfg.precision, device) == torch.bfloat16

    spans = [vocab.level_span("audio", k) for k in range(vocab.width)]  # (a stepped sound's levels)
    deep = model.cfg.depth_levels

    def forward_loss(batch: Batch) -> tuple[Output, torch.Tensor, torch.Tensor]:
        frames = depth_frames(batch.targets, batch.extra_targets, batch.mask, deep) \
            if deep and batch.extra_targets is not None else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            output = net(batch.ids, batch.positions, images=batch.images, extra=batch.extra, depth=frames)
        return output, *token_losses(output.logits, batch.targets, batch.mask, batch.tasks, batch.extra_targets,
                                     spans, output.depth)

    if cfg.compile if cfg.compile is not None else cfg.steps >= COMPILE_FROM:
        # one graph for every batch width (dynamic): examples differ in length
        forward_loss = torch.compile(forward_loss, dynamic=True)
    reserved = {"step", "loss", "lr", "tokens_per_s", "seconds", "params", "trainable", "eval", "aux_loss", *TASKS}

    # Written with every checkpoint (the directory is replaced whole); a resumed run keeps its gallery.
    files: dict[str, bytes] = {}
    if resume and (samples := inside(out, "samples.png", "file")).is_file():
        files["samples.png"] = samples.read_bytes()

    # How the run was made, recorded and nothing more: any number of processes can resume it.
    made_by = {"world_size": world_size, "backend": processes.backend,
               "parallel": ("fsdp" if sharded else "ddp") if world_size > 1 else None}

    def whole() -> tuple[Transformer | None, torch.optim.Optimizer | None]:
        """The model and optimizer as one process holds them: gathered to rank 0 when sharded (a
        collective: every process calls it), None on the other ranks."""
        if not sharded:
            return (model, opt) if writer else (None, None)
        weights, state = dist.gather(model, opt)
        if not writer:
            return None, None
        plain = Transformer(model.cfg)
        plain.load_state_dict(weights, strict=not model.cfg.tie_embeddings)
        plain_opt = _optimizer(plain, cfg)
        plain_opt.load_state_dict(dist.by_position(plain, plain_opt, state))
        return plain.eval(), plain_opt

    def checkpoint(step: int, model: Transformer, opt: torch.optim.Optimizer) -> None:
        files["log.jsonl"] = "".join(json.dumps(r) + "\n" for r in log).encode()
        files["loss.png"] = loss_curve([r for r in log if "loss" in r], ["loss", *TASKS], "training loss")
        position = step * cfg.batch_size * cfg.grad_accum
        mine = stream_record(stream, position)
        extra = {"step": step, "train": asdict(cfg), "capabilities": capabilities(asdict(cfg.mix)),
                 "data_position": position, "processes": made_by,
                 "streams": None if earlier is None else earlier + ([mine] if mine else [])}
        if cfg.adapter is not None:
            save_adapter(out, model, vocab, cfg.adapter, cfg.init_from, opt, extra, files)
        else:
            save_checkpoint(out, model, vocab, tokenizers, opt, files=files, extra=extra)

    bar = progress_bar(range(start, cfg.steps), desc="train", initial=start, total=cfg.steps,
                       enabled=progress and writer, unit="step")
    rows = cfg.batch_size // world_size
    tick, tokens = time.perf_counter(), 0
    # Wall-clock seconds of training (compiling, evaluating and saving included), across resumes.
    began = tick - next((r["seconds"] for r in reversed(log) if "seconds" in r), 0.0)
    for step in bar:
        lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        totals: dict[str, list[float]] = {}
        loss_sum = 0.0
        for micro in range(cfg.grad_accum):
            position = data_position(step, micro, rank, world_size, cfg.batch_size, cfg.grad_accum)
            batch = stream.batch(position, rows, model.cfg.max_seq_len).to(device)
            # DDP averages gradients in each backward; those of all but the last micro-batch can wait.
            wait = isinstance(net, DistributedDataParallel) and micro < cfg.grad_accum - 1
            with net.no_sync() if wait else contextlib.nullcontext():
                output, summed, stats = forward_loss(batch)
            stats = all_sum(stats)  # every process's tokens: the mean is over the global batch
            # DDP averages gradients over processes; scaling by world_size makes that their sum.
            loss = summed * world_size / stats[0].clamp_min(1)
            by_task = task_means(stats)
            objective = loss + output.aux_loss
            terms = {"aux_loss": output.aux_loss} if output.aux_loss.item() != 0 else {}
            for fn in losses:
                for name, value in fn(model, batch, output).items():
                    if name in reserved or name in terms:
                        raise SmaltoError(f"auxiliary loss {name!r}: the log already has that name")
                    objective = objective + value
                    terms[name] = value
            (objective / cfg.grad_accum).backward()
            loss_sum += float(stats[1] / stats[0].clamp_min(1)) / cfg.grad_accum
            tokens += batch.ids.numel()
            for k, v in (by_task | {name: value.item() for name, value in terms.items()}).items():
                totals.setdefault(k, []).append(v)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

        done = step + 1
        if step % cfg.log_every == 0 or done == cfg.steps:
            elapsed = time.perf_counter() - tick
            row = {"step": step, "loss": loss_sum, **{k: float(np.mean(v)) for k, v in totals.items()},
                   "lr": lr, "tokens_per_s": tokens / max(elapsed, 1e-9), "seconds": time.perf_counter() - began}
            log.append(row)
            tick, tokens = time.perf_counter(), 0
            bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
        evaluate = evaluate_fn is not None and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps)
        save = done % cfg.save_every == 0 or done == cfg.steps or done == pause_at
        if evaluate or save:
            current, current_opt = whole()
            if current is not None and evaluate:
                current.eval()
                reached = time.perf_counter() - began  # when the evaluated model was ready
                metrics, gallery = evaluate_fn(current, vocab, tokenizers)
                log.append({"step": step, "eval": metrics, "seconds": reached})
                files["samples.png"] = gallery
                current.train()
            if current is not None and save:
                checkpoint(done, current, current_opt)
        if done == pause_at:
            break
    model.eval()
    return log
