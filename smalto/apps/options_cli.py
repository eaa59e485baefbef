"""Command-line flags made from the config dataclasses: a flag's default is its field's default, a
numeric flag's range is the one the config itself checks (the class's RANGES), and the command
line adds only the help line. Commands build their config from the parsed flags with `pick`."""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Callable

from smalto.data import ShapesWorld
from smalto.options import SAMPLING, Range
from smalto.data.tasks import TASKS


def number(spec: Range | str):
    """An argparse type for a numeric flag: a value in range (a sampling option's range when `spec`
    names one), or argparse's one-line error naming the flag (exit 2) for nan, inf or out of range."""
    r = SAMPLING[spec] if isinstance(spec, str) else spec

    def parse(text: str):
        try:
            value = int(text) if r.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {r.describe()}, got {text!r}") from None
        if not r.contains(value):
            raise argparse.ArgumentTypeError(f"must be {r.describe()}, got {text}")
        return value

    parse.range = r
    return parse


def mix_weight(text: str) -> tuple[str | None, float]:
    """An item of --mix: `task=weight`, or a bare weight (read in the order of TASKS)."""
    name, eq, value = text.rpartition("=")
    if eq and name not in TASKS:
        raise argparse.ArgumentTypeError(f"no task {name!r}; the tasks are {', '.join(TASKS)}")
    return (name if eq else None), WEIGHT(value)


COUNT = number(Range(1, integer=True))
POSITIVE = number(Range(0, low_open=True))
WEIGHT = number(Range(0))
mix_weight.range = WEIGHT.range
SEED = number("seed")
PIXELS = "refuse larger images before decoding them"
SPLIT = "ShapesWorld compositions to {} (see docs/shapesworld.md)"


class Parser(argparse.ArgumentParser):
    """A bad flag reads like every other user error: one `smalto: error:` line, exit 2.

    `later(parser)` adds a command's flags on first use (parsing or help): the config dataclasses
    they come from import torch, which `smalto data ...` or a mistyped flag need not wait for."""

    def __init__(self, *args, later: Callable[[argparse.ArgumentParser], None] | None = None, **kw):
        super().__init__(*args, **kw)
        self.later = later

    def ready(self) -> Parser:
        if self.later is not None:
            later, self.later = self.later, None
            later(self)
        return self

    def parse_known_args(self, args=None, namespace=None):
        return super(Parser, self.ready()).parse_known_args(args, namespace)

    def format_help(self) -> str:
        return super(Parser, self.ready()).format_help()

    def error(self, message: str):
        self.exit(2, f"smalto: error: {message} (see '{self.prog} --help')\n")


def defaults(cls) -> dict[str, Any]:
    return {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(cls)}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config(parser: argparse.ArgumentParser, cls, helps: dict[str, str], **extra: dict) -> None:
    """A flag for each field of `cls` named in `helps` (batch_size: --batch-size), in that order.

    The default is the field's; the type a checked number when the class's RANGES has the field,
    on/off (--x / --no-x) for a bool, a repeatable flag for a tuple. `extra[name]` adds or
    overrides argparse keywords (choices, type, and `flag` to rename the flag)."""
    values, ranges = defaults(cls), getattr(cls, "RANGES", {})
    for name, text in helps.items():
        default = values[name]  # a KeyError here: a help line for a field the class does not have
        kw: dict[str, Any] = {"dest": name, "default": default, "help": text}
        if isinstance(default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, tuple):
            kw.update(action="append", default=list(default))  # argparse appends to a copy of a list
        elif name in ranges:
            kw["type"] = number(ranges[name])
        kw.update(extra.get(name, {}))
        action = parser.add_argument(kw.pop("flag", flag(name)), **kw)
        if default not in (None, (), "") and "%(default)" not in action.help:
            action.help += " (default: %(default)s)"


def pick(cls, args: argparse.Namespace, **values) -> Any:
    """An instance of `cls` from the parsed flags named like its fields, and `values`."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)} | values)


def given(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests that `argv` names (argparse fills in every other one with its default, and cannot
    tell them apart): parse again with every default suppressed."""

    def quiet(p: argparse.ArgumentParser) -> None:
        if isinstance(p, Parser) and p.later is not None:  # still lazy: quieten its flags once added
            later = p.later

            def add_then_quiet(q: argparse.ArgumentParser) -> None:
                later(q)
                quiet(q)

            p.later = add_then_quiet
        for action in p._actions:
            action.default = argparse.SUPPRESS
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    quiet(sub)

    quiet(parser)
    return set(vars(parser.parse_args(argv)))


# The flags of the commands whose options are config dataclasses, added on first use (see Parser).

def tokenizer_train_flags(t: argparse.ArgumentParser) -> None:
    from smalto.tokenizers import ImageTokenizerConfig
    from smalto.training.tokenizer import TokenizerTrainConfig

    t.add_argument("--out", type=Path, required=True, help="the tokenizer directory to write")
    add_config(t, TokenizerTrainConfig, {
        "data": "'shapes' or a folder with images/ and data.jsonl", "steps": "image tokenizer training steps",
        "batch_size": "images per step", "lr": "peak learning rate", "warmup": "learning-rate warm-up steps",
        "seed": "seed of the weights, the data order and the evaluation images",
        "log_every": "train_log.jsonl gets a line every this many steps",
        "eval_images": "held-out images the reconstruction metrics are measured on",
        "text_vocab_size": "BPE vocabulary size, special tokens included",
        "text_scenes": "ShapesWorld scenes whose captions and questions train the BPE",
        "shapes_split": SPLIT.format("train on"),
        "entropy_anneal": "LFQ: final entropy weight as a fraction of the initial one",
        "max_image_pixels": PIXELS}, shapes_split=dict(flag="--split", choices=ShapesWorld.SPLITS))
    add_config(t, ImageTokenizerConfig, {
        "quantizer": "vector quantization with a learned codebook, or lookup-free (binary codes)",
        "codebook_size": "image codes (LFQ: a power of two)", "entropy_weight": "LFQ: initial entropy-loss weight"},
        quantizer=dict(choices=("vq", "lfq")), codebook_size=dict(type=number(Range(2, integer=True))),
        entropy_weight=dict(type=WEIGHT))
    t.add_argument("--text-file", type=Path, action="append", default=[],
                   help="extra UTF-8 text for the BPE (repeatable)")
    t.add_argument("--force", action="store_true", help="replace --out if it exists")


def video_tokenizer_flags(t: argparse.ArgumentParser) -> None:
    from smalto.training.video_tokenizer import VideoTrainConfig
    from smalto.tokenizers.video import VideoTokenizerConfig

    t.add_argument("--out", type=Path, required=True, help="the tokenizer directory to write (--tokenizer's files "
                                                           "with the video tokenizer beside them)")
    t.add_argument("--tokenizer", type=Path, default=None,
                   help="the tokenizer directory whose image tokenizer it builds on (default: the shipped one)")
    t.add_argument("--init-from", type=Path, default=None,
                   help="continue training this directory's video tokenizer (a new schedule; its config is kept)")
    add_config(t, VideoTrainConfig, {
        "steps": "training steps", "batch_size": "clips per step", "lr": "peak learning rate",
        "warmup": "learning-rate warm-up steps", "seed": "seed of the weights and the clips (evaluation: seed + 1)",
        "log_every": "video_log.jsonl gets a line every this many steps",
        "eval_clips": "clips of another seed the metrics are measured on"})
    add_config(t, VideoTokenizerConfig, {
        "frames": "frames per clip it is trained on (odd: ShapesWorld in motion ends its objects on cells)",
        "temporal": "frames folded into each latent frame after the first", "width": "channels of the 3-D layers",
        "blocks": "causal residual blocks in the encoder and in the decoder"})
    t.add_argument("--force", action="store_true", help="replace --out if it exists")


def audio_tokenizer_flags(t: argparse.ArgumentParser) -> None:
    from smalto.tokenizers.audio import AudioCodecConfig
    from smalto.training.audio_tokenizer import AudioTrainConfig

    t.add_argument("--out", type=Path, required=True, help="the tokenizer directory to write (--tokenizer's files "
                                                           "with the audio codec beside them)")
    t.add_argument("--tokenizer", type=Path, default=None,
                   help="the tokenizer directory it is written beside (default: the shipped one)")
    t.add_argument("--init-from", type=Path, default=None,
                   help="continue training this directory's audio codec (a new schedule; its config is kept)")
    add_config(t, AudioTrainConfig, {
        "steps": "training steps", "batch_size": "sounds per step", "crop_slots": "cells' slots in a training crop",
        "lr": "peak learning rate", "warmup": "learning-rate warm-up steps",
        "unquantised": "first steps trained without quantisation (then the codebooks are seeded on the latents)",
        "wave_weight": "weight of the waveform L1 beside the spectral loss",
        "split": SPLIT.format("hear") + " (the codec hears every composition by default)",
        "speech": "share of each batch that is spoken captions (espeak-ng, training voices)",
        "speech_pool": "spoken captions made once and cropped at random",
        "seed": "seed of the weights and the sounds (evaluation: seed + 1)",
        "log_every": "audio_log.jsonl gets a line every this many steps",
        "eval_sounds": "sounds of another seed the metrics are measured on"}, split=dict(choices=ShapesWorld.SPLITS))
    add_config(t, AudioCodecConfig, {
        "strides": "the encoder's downsampling factors; their product is a frame's samples",
        "width": "channels after the first convolution (doubled at each stride)", "latent_dim": "a frame's latent",
        "levels": "residual codes per frame", "codebook_size": "codes per level",
        "dropout": "share of training batches that keep a random prefix of the levels"},
        strides=dict(action=None, nargs="+", type=number(Range(1, 64, integer=True))))
    t.add_argument("--force", action="store_true", help="replace --out if it exists")


def recogniser_flags(t: argparse.ArgumentParser) -> None:
    from smalto.training.recogniser import RecogniserTrainConfig

    t.add_argument("--out", type=Path, required=True, help="the recogniser directory to write")
    add_config(t, RecogniserTrainConfig, {
        "utterances": "captions spoken by espeak-ng to train on", "epochs": "passes over them",
        "batch_size": "utterances per step", "lr": "peak learning rate", "warmup": "learning-rate warm-up steps",
        "seed": "seed of the weights and the utterances (evaluation: seed + 1, unseen scenes)",
        "eval_utterances": "utterances in each evaluation set", "width": "channels of its convolutions"})
    t.add_argument("--force", action="store_true", help="replace --out if it exists")


def train_flags(tr: argparse.ArgumentParser) -> None:
    from smalto.model import PRESETS
    from smalto.model.config import FUSIONS, ROPES
    from smalto.training.data import TaskMix
    from smalto.format.vocab import PATTERNS
    from smalto.training.optim import OPTIMIZERS
    from smalto.training.trainer import COMPILE_FROM, DEFAULT_PRESET, LAYOUTS, PRECISIONS, VISION_INITS, TrainConfig

    tr.add_argument("--out", type=Path, required=True, help="run directory (checkpoint, log, plots)")
    add_config(tr, TrainConfig, {
        "preset": f"model size (default: {DEFAULT_PRESET}; with --init-from, the checkpoint's)",
        "data": "'shapes' (ShapesWorld, endless), 'shapes-plus' (with a shape and a colour more: a task to "
                "fine-tune on) or a folder with images/ and data.jsonl",
        "tokenizers": "tokenizer directory (default: the shipped one; with --init-from, the checkpoint's)",
        "init_from": "fine-tune: start from this checkpoint's weights, model and tokenizers (new optimizer, step 0)",
        "freeze": "do not train the parameters whose names match PATTERN, e.g. 'layers.0.*' or 'embed.*' "
                  "(repeatable)",
        "steps": "total optimizer steps", "batch_size": "examples per micro-batch (over all processes)",
        "grad_accum": "micro-batches per optimizer step", "lr": "peak learning rate (warm-up, then cosine decay)",
        "warmup": "learning-rate warm-up steps", "weight_decay": "decoupled weight decay of the weight matrices",
        "optimizer": "muon: Muon for the blocks' weight matrices and AdamW for the rest; adamw: AdamW for all",
        "grad_clip": "largest gradient norm", "seed": "seed of the initial weights and of the data",
        "log_every": "log.jsonl gets a line every this many steps",
        "eval_every": "draw and caption a probe set every this many steps (0: never; ShapesWorld only)",
        "save_every": "write the checkpoint every this many steps",
        "precision": "matmuls in bf16 autocast (auto: where the hardware has native bf16)",
        "compile": "torch.compile the forward pass and loss: faster steps after a minute of compiling "
                   f"(default: when --steps is at least {COMPILE_FROM})",
        "max_image_pixels": PIXELS,
        "shard": "under torchrun: shard weights and optimizer state across the processes (FSDP2) instead of "
                 "a whole copy in each (DDP)",
        "experts": "mixture of experts: this many experts in place of each MLP (0: dense), as many active "
                   "parameters as the dense preset",
        "active_experts": "experts each token is routed to (with --experts)",
        "rope": "rotary positions: 1d (the running index), mrope (Qwen2-VL: time, row and column in sections of "
                "the frequencies) or interleaved (Qwen3-VL) (default: the preset's 1d, or --init-from's)",
        "context": "tokens a sequence may hold (default: the preset's 160, or --init-from's; a clip task needs "
                   "384: the longest clip captions are 82 tokens)",
        "fusion": "how the model reads pictures: tokens (their codes in the stream), projector (a small ViT's "
                  "features in the codes' places, LLaVA) or xattn (gated cross-attention to those features, "
                  "Flamingo); drawing always writes codes (default: tokens, or --init-from's)",
        "vision_init": "a new projector or xattn model's ViT stem: from scratch, or the image tokenizer's encoder "
                       "with its weights",
        "layout": "how drawings are written: raster (the codes row by row) or cells (each ShapesWorld cell named "
                  "in words, then its codes, or a flat sound's time slot; docs/compose.md) (default: raster, or "
                  "--init-from's)",
        "sound_levels": "the audio codec's residual levels a sound is written with, frame by frame (default: "
                        "--init-from's, or all the codec's when --mix has sound tasks; docs/audio.md)",
        "sound_pattern": "how a sound's levels are laid out: flat (a token per code, frame by frame), delay (a "
                         "token per step carrying the finer levels of the frames before, MusicGen) or depth (a "
                         "token per frame carrying its finer levels, which a small depth head predicts, Moshi) "
                         "(default: --init-from's, or flat)",
    }, preset=dict(choices=tuple(PRESETS)), rope=dict(choices=ROPES), precision=dict(choices=PRECISIONS),
       fusion=dict(choices=FUSIONS), vision_init=dict(choices=VISION_INITS), layout=dict(choices=LAYOUTS),
       optimizer=dict(choices=OPTIMIZERS), sound_pattern=dict(choices=PATTERNS),
       compile=dict(action=argparse.BooleanOptionalAction), freeze=dict(metavar="PATTERN"))
    mix = defaults(TaskMix)
    tr.add_argument("--mix", type=mix_weight, nargs="+", default=tuple((t, mix[t]) for t in TASKS if mix[t]),
                    metavar="TASK=WEIGHT",
                    help=f"relative weights of the tasks ({', '.join(TASKS)}); those left out get 0. Bare weights "
                         "are read in that order (default: " + " ".join(f"{t}={mix[t]:g}" for t in TASKS if mix[t])
                         + ")")
    add_config(tr, TaskMix, {
        "premises": "share of questions naming an object without its place, half of them one the scene lacks",
        "cond_dropout": "share of drawings whose prompt is dropped (what classifier-free guidance contrasts)",
        "train_prompt_images": "also predict the image codes of caption and QA examples",
        "qa_turns": "question-answer turns per QA example"})
    tr.add_argument("--resume", action="store_true",
                    help="continue the run in --out; other flags must match it (--steps, --pause-at and --compile "
                         "may change)")
    tr.add_argument("--pause-at", type=COUNT, default=None,
                    help="stop with a checkpoint at this step; --resume continues the same schedule")


def finetune_flags(f: argparse.ArgumentParser) -> None:
    from smalto.training.finetune import LR, METHODS, FinetuneConfig

    f.add_argument("--out", type=Path, required=True, help="the model, adapter or probe directory to write")
    add_config(f, FinetuneConfig, {
        "base": "the model to adapt (default: the shipped one)",
        "method": "full: every weight; lora: low-rank adapters (peft); prompt: learned input embeddings; "
                  "probe: a linear classifier on the frozen hidden states",
        "data": "'shapes-plus' (ShapesWorld with a shape and a colour the shipped model never saw), 'shapes', or a "
                "folder with images/ and data.jsonl (a probe reads its records' \"label\")",
        "steps": "optimizer steps", "batch_size": "examples per step",
        "lr": "learning rate (default: " + ", ".join(f"{m} {v:g}" for m, v in LR.items()) + ")",
        "warmup": "learning-rate warm-up steps", "rank": "LoRA rank", "alpha": "LoRA scale (the update is alpha/rank "
        "times B A)", "tokens": "prompt tuning: learned embeddings before every sequence",
        "examples": "probe: labelled images, a fifth held out for the accuracy",
        "seed": "seed of the data and the new weights",
        "eval_every": "draw and caption a probe set every this many steps (0: never)",
        "save_every": "write the checkpoint every this many steps"},
        base=dict(flag="--from", metavar="MODEL"), method=dict(choices=METHODS),
        rank=dict(type=number(Range(1, integer=True))), alpha=dict(type=POSITIVE),
        tokens=dict(type=number(Range(1, 64, integer=True))))
    f.add_argument("--resume", action="store_true", help="continue the run in --out with the same flags")


def rl_flags(r: argparse.ArgumentParser) -> None:
    from smalto.training.rl import RL_TASKS, RLConfig

    r.add_argument("--out", type=Path, required=True, help="run directory (checkpoint, log, plots)")
    add_config(r, RLConfig, {
        "init_from": "the model to start from (default: the shipped one)",
        "tasks": "what the prompts ask for, in turn: drawings (rewarded by the share of the prompt's constraints "
                 "the parsed pixels satisfy) and/or answers (1 when exact)",
        "split": SPLIT.format("draw prompts from") + " (heldout: compositions the model never saw drawn)",
        "min_objects": "fewest objects in a prompt's scene", "steps": "total updates", "prompts": "prompts per step",
        "group": "completions sampled per prompt",
        "lr": "AdamW learning rate (constant)", "temperature": "sampling temperature of the rollouts",
        "clip": "PPO's clip of the probability ratio (matters with --epochs above 1)",
        "kl": "weight of the KL penalty to the starting model (0: none)",
        "epochs": "updates per batch of rollouts (1: on-policy)", "grad_clip": "largest gradient norm",
        "seed": "seed of the prompts and the sampling", "log_every": "log.jsonl gets a line every this many steps",
        "eval_every": "a ShapesEval probe every this many steps (0: never)",
        "save_every": "write the checkpoint every this many steps",
        "precision": "matmuls in bf16 autocast (auto: where the hardware has native bf16)"},
        init_from=dict(flag="--from", metavar="MODEL"), tasks=dict(flag="--task", action="store", nargs="+",
                                                                   choices=RL_TASKS),
        split=dict(choices=ShapesWorld.SPLITS), precision=dict(choices=("auto", "bf16", "fp32")))
    r.add_argument("--resume", action="store_true", help="continue the run in --out (only --steps may change)")


def serve_flags(sv: argparse.ArgumentParser) -> None:
    from smalto.apps.serve.config import ServeConfig

    sv.add_argument("--model-name", help="the id clients ask for (default: the model directory's name)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    sv.add_argument("--port", type=number(Range(0, 65535, integer=True)), default=8000,
                    help="port to listen on (default: %(default)s)")
    sv.add_argument("--api-key", default=os.environ.get("SMALTO_API_KEY"),
                    help="require 'Authorization: Bearer KEY' on /v1 (default: $SMALTO_API_KEY)")
    add_config(sv, ServeConfig, {
        "max_queue": "requests waiting for the model; more get 503", "max_batch": "rows decoded together",
        "timeout": "seconds a request may take, queue wait included",
        "readers": "threads that decode images and tokenize", "max_image_pixels": PIXELS,
        "max_request_pixels": "refuse a request whose images and clip frames declare more pixels in all"})
    sv.add_argument("--max-body-mb", type=POSITIVE, default=defaults(ServeConfig)["max_body_bytes"] / 2**20,
                    help="larger request bodies get 413 (default: %(default)s)")
    sv.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                    help="uvicorn's log level (default: %(default)s)")
