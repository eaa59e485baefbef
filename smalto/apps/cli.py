"""`smalto ...`: a thin command line over the Python API; each command is a few lines.

The flags of `train`, `tokenizer train`, `serve` and `data shapes` are made from their config
dataclasses (see smalto.apps.options_cli): defaults and ranges live in the dataclass.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from smalto import __version__, atomic
from smalto.apps.options_cli import (COUNT, PIXELS, SEED, SPLIT, Parser, add_config, flag, given, number, pick,
                                     finetune_flags, rl_flags, serve_flags, tokenizer_train_flags, train_flags,
                                     video_tokenizer_flags, audio_tokenizer_flags, recogniser_flags)
from smalto.data import ShapesConfig, ShapesWorld
from smalto.data.shapes import WORLDS
from smalto.assets import DEFAULT_MODEL
from smalto.data.gate import MAX_PIXELS, unicode_text
from smalto.data.video import is_clip
from smalto.errors import SmaltoError
from smalto.data.tasks import TASKS
from smalto.paths import inside
from smalto.effort import EFFORTS, THINKING_BUDGET
from smalto.options import Range


def _data_shapes(args: argparse.Namespace) -> None:
    from smalto.data import write_shapes

    out = write_shapes(args.out, args.n, seed=args.seed, split=args.split, cfg=pick(ShapesConfig, args),
                       force=args.force)
    print(f"wrote {args.n} scenes to {out}/ (images/ + data.jsonl)")


def _data_clips(args: argparse.Namespace) -> None:
    from smalto.data import MotionConfig, write_clips

    out = write_clips(args.out, args.n, seed=args.seed, split=args.split, cfg=MotionConfig(args.frames),
                      force=args.force)
    print(f"wrote {args.n} clips to {out}/ (clips/*.gif + data.jsonl)")


def _data_sounds(args: argparse.Namespace) -> None:
    from smalto.data import write_sounds

    out = write_sounds(args.out, args.n, seed=args.seed, split=args.split, force=args.force)
    print(f"wrote {args.n} sounds to {out}/ (sounds/*.wav + data.jsonl)")


def _data_speech(args: argparse.Namespace) -> None:
    from smalto.data import write_speech

    out = write_speech(args.out, args.n, seed=args.seed, split=args.split, voices=args.voices, force=args.force)
    print(f"wrote {args.n} spoken captions to {out}/ (sounds/*.wav + data.jsonl)")


def _recogniser_train(args: argparse.Namespace) -> None:
    from smalto.training.recogniser import RecogniserTrainConfig, train_recogniser

    metrics = train_recogniser(args.out, pick(RecogniserTrainConfig, args), force=args.force)
    print(metrics.table())
    print(f"wrote {args.out}/ (recogniser.safetensors, recogniser.json, recogniser_train.json)")


def _recogniser_transcribe(args: argparse.Namespace) -> None:
    from smalto.data.gate import read_sound
    from smalto.verify.recogniser import Recogniser

    model = Recogniser.load(args.recogniser)
    waves = [read_sound(path, str(path), model.cfg.sample_rate) for path in args.audio]
    for path, text in zip(args.audio, model.transcribe(waves)):
        print(f"{path}: {text}" if len(args.audio) > 1 else text)


def _data_check(args: argparse.Namespace) -> None:
    from smalto.data import load_clip_folder, load_folder
    from smalto.data.folder import is_clip_folder, is_sound_folder, load_sound_folder

    if is_sound_folder(args.dir):
        sounds = load_sound_folder(args.dir, progress=True)
        seconds = sum(len(w) for w in sounds.sounds) / sounds.sample_rate
        qa = sum(len(r.qa) for r in sounds.records)
        scenes = sum(r.scene is not None for r in sounds.records)
        print(f"{args.dir}: {len(sounds)} sounds ({seconds:.1f} s), {qa} question-answer pairs, {scenes} scene "
              f"graphs: OK")
        return
    if is_clip_folder(args.dir):
        clips = load_clip_folder(args.dir, args.size, progress=True, max_pixels=args.max_image_pixels)
        moving = sum(r.motion is not None for r in clips.records)
        qa = sum(len(r.qa) for r in clips.records)
        print(f"{args.dir}: {len(clips)} clips, {qa} question-answer pairs, {moving} with their motion: OK")
        return
    folder = load_folder(args.dir, args.size, progress=True, max_pixels=args.max_image_pixels)
    scenes = sum(r.scene is not None for r in folder.records)
    qa = sum(len(r.qa) for r in folder.records)
    print(f"{args.dir}: {len(folder)} records, {qa} question-answer pairs, {scenes} scene graphs: OK")


def _tokenizer_train(args: argparse.Namespace) -> None:
    from smalto.tokenizers import ImageTokenizerConfig
    from smalto.training.tokenizer import TokenizerTrainConfig, train_tokenizers

    cfg = pick(TokenizerTrainConfig, args, image=pick(ImageTokenizerConfig, args))
    metrics = train_tokenizers(args.out, cfg, text_files=args.text_file, force=args.force)
    print(metrics.table())
    print(f"wrote {args.out}/ (text.json, image.safetensors, image.json, loss.png, reconstructions.png)")


def _tokenizer_train_video(args: argparse.Namespace) -> None:
    from smalto.training.video_tokenizer import VideoTrainConfig, train_video
    from smalto.tokenizers.video import VideoTokenizerConfig

    cfg = pick(VideoTrainConfig, args, video=pick(VideoTokenizerConfig, args))
    metrics = train_video(args.out, cfg, args.tokenizer, force=args.force, init_from=args.init_from)
    print(metrics.table())
    print(f"wrote {args.out}/ (video.safetensors, video.json, video_loss.png, video_reconstructions.png)")


def _tokenizer_train_audio(args: argparse.Namespace) -> None:
    from smalto.tokenizers.audio import AudioCodecConfig
    from smalto.training.audio_tokenizer import AudioTrainConfig, train_audio

    cfg = pick(AudioTrainConfig, args, codec=pick(AudioCodecConfig, args, strides=tuple(args.strides)))
    metrics = train_audio(args.out, cfg, args.tokenizer, force=args.force, init_from=args.init_from)
    print(metrics.table())
    print(f"wrote {args.out}/ (audio.safetensors, audio.json, audio_train.json, audio_loss.png)")


def _tokenizer_eval(args: argparse.Namespace) -> None:
    from smalto.tokenizers import load_tokenizers
    from smalto.tokenizers.evaluate import evaluate_image_tokenizer
    from smalto.training.tokenizer import ImageData

    tok = load_tokenizers(args.tokenizer)
    data = ImageData(args.data, tok.image.cfg.image_size, args.n, args.seed, holdout=False, eval_split=args.split,
                     max_pixels=args.max_image_pixels)
    metrics, _ = evaluate_image_tokenizer(tok.image, data.eval, data.has_scenes, data.shapes_cfg)
    print(f"tokenizer: {tok.path}\ndata:      {args.data}")
    print(metrics.table())
    if args.json:
        report = {"tokenizer": str(tok.path), "data": args.data, **asdict(metrics),
                  "text_vocab_size": tok.text.vocab_size}
        atomic.write_text(args.json, json.dumps(report, indent=2) + "\n")


def _train_config(args: argparse.Namespace):
    from smalto.training.data import TaskMix
    from smalto.training.trainer import TrainConfig

    names = [name for name, _ in args.mix]
    if None in names and any(names):
        raise SmaltoError("--mix takes task=weight pairs (--mix caption=0.3 draw=0.4 qa=0.3) or bare weights in "
                          f"the order {' '.join(TASKS)}, not both")
    if any(names):
        if len(set(names)) < len(names):
            raise SmaltoError(f"--mix names a task twice: {' '.join(n for n in names if names.count(n) > 1)}")
        weights = dict.fromkeys(TASKS, 0.0) | dict(args.mix)  # tasks left out get none
    elif len(args.mix) > len(TASKS):
        raise SmaltoError(f"--mix takes at most {len(TASKS)} weights ({', '.join(TASKS)}), got {len(args.mix)}")
    else:
        weights = dict(zip(TASKS, [w for _, w in args.mix] + [0.0] * (len(TASKS) - len(args.mix))))
    return pick(TrainConfig, args, mix=pick(TaskMix, args, **weights))


def _as_flags(cfg) -> dict:
    """A TrainConfig as `smalto train`'s flags name it: --mix for the task weights, the mix's other
    fields on their own."""
    values = asdict(cfg)
    mix = values.pop("mix")
    weights = {task: mix.pop(task) for task in TASKS}
    return values | {"mix": [f"{task}={w:g}" for task, w in weights.items() if w]} | mix


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "(none)"
    return "(none)" if value is None else str(value)


def _resumed_config(args: argparse.Namespace):
    """The saved run's config, with --steps if given; any other flag given must agree with it."""
    from smalto.checkpoint import read_meta
    from smalto.training.trainer import TrainConfig

    saved = read_meta(args.out).get("train")
    if not isinstance(saved, dict):
        raise SmaltoError(f"{args.out}/meta.json: no training config to resume from")
    # A folder named in meta.json is read only when the user names it too: a run directory
    # from someone else must not make smalto read the user's files.
    data = saved.get("data", "shapes")
    if data not in WORLDS and args.data != data:
        raise SmaltoError(f"{args.out}: this run was trained on the folder {data!r}; to resume it, "
                          f"name that folder yourself: --data {data}")
    try:
        cfg = TrainConfig.saved(saved)
    except TypeError as e:
        raise SmaltoError(f"{args.out}/meta.json: training config does not fit this version of smalto ({e})") from None
    old, new = _as_flags(cfg), _as_flags(_train_config(args))
    named = given(build_parser(lazy=True), args.argv)
    for name in [k for k in old if k in named and k not in TrainConfig.MAY_CHANGE]:
        if new[name] != old[name]:
            raise SmaltoError(f"{flag(name)} {_show(new[name])} contradicts {args.out}, which was trained with "
                              f"{flag(name)} {_show(old[name])}; resume with the same flags (only --steps, "
                              f"--pause-at and --compile may change)")
    return replace(cfg, **{k: getattr(args, k) for k in TrainConfig.MAY_CHANGE if k in named})


def _train(args: argparse.Namespace) -> None:
    from smalto.training import dist
    from smalto.training.trainer import train

    cfg = _resumed_config(args) if args.resume else _train_config(args)
    evaluate_fn = None
    if cfg.eval_every and cfg.data in WORLDS:
        from smalto.eval.shapes_eval import training_probe

        evaluate_fn = training_probe
    processes = dist.setup()  # one process, or this one's place among those torchrun started
    try:
        log = train(args.out, cfg, resume=args.resume, evaluate_fn=evaluate_fn, pause_at=args.pause_at,
                    processes=processes)
    except BaseException:
        dist.teardown(processes, finished=False)
        raise
    dist.teardown(processes)
    last = [r for r in log if "loss" in r][-1]
    if processes.main:
        print(f"step {last['step'] + 1} of {cfg.steps}: loss {last['loss']:.4f}; checkpoint in {args.out}/")


def _finetune(args: argparse.Namespace) -> None:
    from smalto.training.finetune import FinetuneConfig, finetune

    report = finetune(args.out, pick(FinetuneConfig, args), resume=args.resume)
    if report["method"] == "probe":
        print(f"probe accuracy {report['accuracy']:.1f} % on {report['test']} held-out images (pixel baseline "
              f"{report['pixel_baseline']:.1f} %), {report['trainable']:,} weights; in {args.out}/")
    else:
        print(f"{report['method']}: trained {report['trainable']:,} of {report['params']:,} weights in "
              f"{report['minutes']:.1f} min, loss {report['loss']:.4f}; in {args.out}/")


def _rl(args: argparse.Namespace) -> None:
    from smalto.checkpoint import read_meta
    from smalto.eval.shapes_eval import probe
    from smalto.training.rl import RLConfig, train_rl

    cfg = pick(RLConfig, args)
    if args.resume:  # the saved config, with --steps if given
        saved = read_meta(args.out).get("rl")
        if not isinstance(saved, dict):
            raise SmaltoError(f"{args.out}/meta.json: no RL config to resume from")
        named = given(build_parser(lazy=True), args.argv)
        cfg = replace(RLConfig(**saved), **({"steps": args.steps} if "steps" in named else {}))
    log = train_rl(args.out, cfg, resume=args.resume, evaluate=probe)
    last = [r for r in log if "reward" in r][-1]
    print(f"step {last['step'] + 1} of {cfg.steps}: mean reward {last['reward']:.3f}; checkpoint in {args.out}/")


def _pipeline(args: argparse.Namespace, compile: bool = False):
    """The model `--model`, `--dtype` and `--adapter` name."""
    from smalto.pipeline import load

    if compile:
        print("smalto: compiling the decoding step (about 20 s on 2 cores)", file=sys.stderr, flush=True)
    return load(args.model, args.dtype, compile, getattr(args, "adapter", None))


def _save_clips(clips: list, out: Path, scale: int) -> None:
    """One clip, or several side by side, as an animated GIF or WebP."""
    from smalto.data.video import save_clip

    save_clip(np.concatenate(clips, axis=2), out, scale=scale)
    print(f"wrote {out} ({len(clips)} clip{'s' if len(clips) > 1 else ''} of {len(clips[0])} frames)")


def _clip_out(out: Path, force: bool) -> Path:
    from smalto.data.video import FORMATS

    if out.suffix.lower() not in FORMATS:
        raise SmaltoError(f"{out}: a clip is written as .gif or .webp (--out clip.gif)")
    return _fresh(out, force)


def _fresh(out: Path, force: bool) -> Path:
    """An output file that may be written: refused, before any work, if it exists and --force was not given."""
    if out.is_dir():
        raise SmaltoError(f"{out}: is a directory; give a file name")
    if out.exists() and not force:
        raise SmaltoError(f"{out}: already exists; pass --force to replace it, or choose another --out")
    return out


def _drawing_flags(p: argparse.ArgumentParser, n_help: str) -> None:
    """How many items a command makes, and how it samples them."""
    p.add_argument("--n", type=number(Range(1, 64, integer=True)), default=1, help=n_help)
    p.add_argument("--cfg", type=number("guidance"), default=None,
                   help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--seed", type=SEED, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--temperature", type=number("temperature"), default=None,
                   help="sampling temperature; 0 is greedy (default: the model's)")


def _sound_out(out: Path, force: bool) -> Path:
    if out.suffix.lower() != ".wav":
        raise SmaltoError(f"{out}: a sound is written as .wav (--out sound.wav)")
    return _fresh(out, force)


def _save_sounds(waves: list, out: Path, pipe, said: bool = False) -> None:
    """One sound, or several one after another with a fifth of a second between, as a WAV; for a
    ShapesWorld model, what the sound verifier hears in each (what came out, not what was asked)
    unless that was `said` already."""
    from smalto.data.shapes import captions
    from smalto.data.sounds import SoundConfig, audible, write_wav
    from smalto.verify.hearing import parse_sound

    sample_rate = pipe.sample_rate
    if audible(pipe.world) and not said:
        cfg = SoundConfig(sample_rate=sample_rate, world=pipe.world)
        for i, wave in enumerate(waves):
            scene = parse_sound(wave, cfg)
            heard = captions(scene)[0] if scene.objects else "silence"
            print(f"sound {i + 1}: the verifier hears {heard!r}")
    gap = np.zeros(sample_rate // 5, np.float32)
    write_wav(out, np.concatenate([x for w in waves for x in (w, gap)][:-1]), sample_rate)
    print(f"wrote {out} ({len(waves)} sound{'s' if len(waves) > 1 else ''} of {len(waves[0]) / sample_rate:.2f} s)")


def _say_drawings(drawings: list, prompt: str, kind: str = "image", verb: str = "reads") -> None:
    """What came out of each drawing, as the verifier reads (hears) it; the plan only beside it."""
    if drawings[0].note:
        print(f"note: {drawings[0].note}", file=sys.stderr)
    for i, d in enumerate(drawings):
        line = f"{kind} {i + 1}" + (f": the verifier {verb} {d.reading!r}" if d.reading else "")
        if d.verdict is not None:
            line += (", which satisfies the prompt" if d.verdict.satisfied else
                     ", which fails: " + "; ".join(d.verdict.failed))
            line += f" (best of {d.candidates})" if d.candidates > 1 else ""
        if d.prompt != prompt:
            line += f"; planned as {d.prompt!r}"
        print(line)


def _generate(args: argparse.Namespace) -> None:
    from smalto.plots import image_grid, save_png

    unicode_text(args.prompt)  # (before the model loads)
    if args.video and args.audio:
        raise SmaltoError("--video and --audio: choose one")
    sampling = dict(guidance=args.cfg, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    if args.audio:
        out = _sound_out(args.out if args.out != Path("out.png") else Path("out.wav"), args.force)
        pipe = _pipeline(args)
        drawings = pipe.drawings(args.prompt, args.n, args.effort, args.best_of, args.seed, "audio", **sampling)
        _say_drawings(drawings, args.prompt, "sound", "hears")
        return _save_sounds([d.image for d in drawings], out, pipe, said=True)
    if args.video:
        out = _clip_out(args.out if args.out != Path("out.png") else Path("out.gif"), args.force)
        clips = _pipeline(args).generate(args.prompt, args.n, "video", args.cfg, args.seed, args.temperature,
                                         args.top_k, args.top_p)
        return _save_clips(clips, out, args.scale)
    out = _fresh(args.out, args.force)
    pipe = _pipeline(args)
    drawings = pipe.drawings(args.prompt, args.n, args.effort, args.best_of, args.seed, **sampling)
    _say_drawings(drawings, args.prompt)
    images = [d.image for d in drawings]
    if args.n == 1:  # (at the grid's scale, without its border)
        save_png(out, images[0].repeat(args.scale, 0).repeat(args.scale, 1))
    else:
        save_png(out, image_grid([np.stack(images)], scale=args.scale))
    print(f"wrote {out} ({args.n} image{'s' if args.n > 1 else ''})")


def _read_first(args: argparse.Namespace, paths: list) -> list:
    """The pictures, clips and sounds a command names, read through the decoding gate before the
    model loads (which takes seconds): a file that will be refused is refused in a fraction of one.
    Read at the side (the sample rate) the model's tokenizers record; left as paths where they
    record none (loading the model then says what is wrong with the directory)."""
    from smalto.data.gate import is_sound, read_sound
    from smalto.data.images import load_image
    from smalto.data.video import load_clip

    def recorded(name: str, key: str) -> int | None:
        try:
            config = inside(inside(args.model or DEFAULT_MODEL, "tokenizers", "directory"), name, "file")
            return int(json.loads(config.read_text())[key])
        except (OSError, ValueError, KeyError, TypeError, SmaltoError):
            return None

    side, rate = recorded("image.json", "image_size"), recorded("audio.json", "sample_rate")
    out = []
    for p in paths:
        if is_sound(p):
            if rate is not None:  # (checked, and left a path, so that the model's own limits name the file too)
                read_sound(p, str(p), rate)
            out.append(p)
        else:
            out.append(p if side is None else (load_clip if is_clip(p) else load_image)(p, side, args.max_image_pixels))
    return out


def _convert(args: argparse.Namespace) -> None:
    from smalto.data.gate import is_sound
    from smalto.plots import save_png

    into = "audio" if args.out.suffix.lower() == ".wav" else "image"
    out = _sound_out(args.out, args.force) if into == "audio" else _fresh(args.out, args.force)
    if into == "image" and args.out.suffix.lower() != ".png":
        raise SmaltoError(f"{args.out}: write a picture of a sound as .png, or a picture's sound as .wav")
    if is_sound(args.item) == (into == "audio"):
        raise SmaltoError(f"{args.item} -> {args.out}: a picture becomes a sound (.wav), a sound a picture (.png)")
    item, = _read_first(args, [args.item])
    pipe = _pipeline(args)
    made = pipe.convert([item] * args.n, into, args.seed, guidance=args.cfg, temperature=args.temperature)
    if into == "audio":
        return _save_sounds(made, out, pipe)
    if pipe.world:
        for i, image in enumerate(made):
            print(f"image {i + 1}: the verifier reads {pipe.read_drawing(image)!r}")
    save_png(out, np.concatenate(made, axis=1).repeat(args.scale, 0).repeat(args.scale, 1))
    print(f"wrote {out} ({args.n} image{'s' if args.n > 1 else ''})")


def _caption(args: argparse.Namespace) -> None:
    images = _read_first(args, args.images)
    pipe = _pipeline(args)
    pipe.max_image_pixels = args.max_image_pixels
    for name, item in zip(args.images, images):  # pictures or clips
        text = pipe.caption(item, beams=args.beams, effort=args.effort, best_of=args.best_of)
        print(f"{name}: {text}" if len(args.images) > 1 else text)


def _continue(args: argparse.Namespace) -> None:
    from smalto.data.gate import is_sound

    if is_sound(args.item):  # (a melody's start: --given is seconds of it)
        out = _sound_out(args.out if args.out != Path("next.gif") else Path("next.wav"), args.force)
        sound, = _read_first(args, [args.item])
        pipe = _pipeline(args)
        return _save_sounds(pipe.continue_sound(sound, args.given, args.n, args.seed, args.temperature), out, pipe)
    if args.given is not None and args.given != int(args.given):
        raise SmaltoError(f"--given {args.given}: a clip is given whole latent frames (1, 2, ...)")
    out = _clip_out(args.out, args.force)
    clip, = _read_first(args, [args.item])
    pipe = _pipeline(args)
    pipe.max_image_pixels = args.max_image_pixels
    given = 1 if args.given is None else int(args.given)
    _save_clips(pipe.continue_clip(clip, given, args.n, args.seed, args.temperature), out, args.scale)


def _ask(args: argparse.Namespace) -> None:
    question = unicode_text(args.question)
    image, = _read_first(args, [args.image])
    pipe = _pipeline(args)
    pipe.max_image_pixels = args.max_image_pixels
    if args.beams > 1:
        print(pipe.ask(image, question, beams=args.beams))
        return
    reply = pipe.reply_batch([image], [question], args.effort, args.best_of, args.thinking_budget)[0]
    if reply.reasoning:  # the thinking goes to stderr, so stdout stays the answer
        check = {"agrees": "the solver's answer from it, the same as the model's",
                 "corrected": f"the solver's answer from it; the model said {reply.own!r}"}
        print(f"thinking: {reply.reasoning}" + (f" ({check[reply.check]})" if reply.check else ""), file=sys.stderr)
        print(f"answered by: {reply.answered_by}", file=sys.stderr)
    print(reply.text)


def _eval(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from smalto.eval.shapes_eval import QUICK_EVAL, EvalConfig, evaluate, summary_table

    pipe = _pipeline(args)
    given = {"efforts": tuple(e for e in args.effort if e != "none")}
    given |= {} if args.seed is None else {"seed": args.seed}
    cfg = replace(QUICK_EVAL if args.quick else EvalConfig(), **given)
    report = evaluate(pipe, cfg, progress=True)
    report["settings"]["quick"] = args.quick
    print(summary_table(report))
    if args.json:
        atomic.write_text(args.json, json.dumps(report, indent=2) + "\n")


def _pack(args: argparse.Namespace) -> None:
    import torch

    from smalto.export import pack

    draw = {k: v for k, v in (("guidance", args.cfg), ("temperature", args.temperature),
                              ("top_k", args.top_k), ("top_p", args.top_p)) if v is not None}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.dtype]
    out = pack(args.model, args.out, dtype, draw, args.adapter)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out}/ ({size / 1e6:.1f} MB)")


def _serve(args: argparse.Namespace) -> None:
    from smalto.apps.serve import ServeConfig, run_server

    pipe = _pipeline(args, args.compile)
    cfg = pick(ServeConfig, args, model_name=args.model_name or pipe.name, api_key=args.api_key or None,
               max_body_bytes=int(args.max_body_mb * 2**20))
    print(f"smalto: serving {cfg.model_name} on http://{args.host}:{args.port}/ (API at /v1, web UI at /)", flush=True)
    run_server(pipe, cfg, args.host, args.port, args.log_level)


def _chat(args: argparse.Namespace) -> None:
    from smalto.apps.terminal import run_terminal_chat
    from smalto.inference import Sampling

    pipe = _pipeline(args, args.compile)
    pipe.max_image_pixels = args.max_image_pixels
    run_terminal_chat(pipe, args.out, Sampling(args.temperature, seed=args.seed), args.preview)


def _export(args: argparse.Namespace) -> None:
    import torch

    from smalto.export import export_hf

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    out = export_hf(args.model or DEFAULT_MODEL, args.out, dtype, force=args.force, adapter=args.adapter)
    print(f"wrote {out}/ (transformers: AutoModelForCausalLM.from_pretrained('{out}'); images: {out}/image_tokenizer)")


def _bench(args: argparse.Namespace) -> None:
    from smalto.apps.bench import BenchConfig, run, table

    pipe = _pipeline(args)
    report = run(pipe, BenchConfig(quick=args.quick), progress=lambda line: print(line, flush=True))
    print()
    print(table(report))
    if args.json:
        atomic.write_text(args.json, json.dumps(report, indent=2) + "\n")


def _demo(args: argparse.Namespace) -> None:
    from smalto.apps.demo import run_demo

    run_demo(args.out, quick=args.quick)


def build_parser(lazy: bool = False) -> argparse.ArgumentParser:
    """Every command and flag; `lazy` leaves the flags made from configs (which import torch) to be
    added when their command runs or shows its help."""
    p = Parser(prog="smalto", description="Unified multimodal next-token prediction.")
    p.add_argument("--version", action="version", version=f"smalto {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")
    splits = dict(choices=ShapesWorld.SPLITS, default="all")

    data = sub.add_parser("data", help="make or check datasets").add_subparsers(
        dest="data_cmd", required=True, metavar="WHAT", help="shapes or check")
    def folder(name: str, help: str, items: str, split: str, n: int | None = 100, **split_flags):
        """A `data` command writing a folder: --out, --n, --seed, --split and --force, as every one has."""
        d = data.add_parser(name, help=help)
        d.add_argument("--out", required=True, type=Path, help="the folder to write")
        d.add_argument("--n", type=COUNT, default=n, required=n is None,
                       help=items + (" (default: %(default)s)" if n else ""))
        d.add_argument("--seed", type=SEED, default=0, help="which scenes (default: %(default)s)")
        d.add_argument("--split", **splits | split_flags, help=split + " (default: %(default)s)")
        d.add_argument("--force", action="store_true", help="replace --out if it exists")
        return d

    s = folder("shapes", "materialise ShapesWorld scenes as images/ + data.jsonl", "number of scenes",
               SPLIT.format("draw from"), None, default="train")
    add_config(s, ShapesConfig, {"image_size": "image side in pixels", "max_objects": "most objects in a scene"},
               image_size=dict(flag="--size", type=number(Range(12, 1024, integer=True))),
               max_objects=dict(type=int, choices=(1, 2, 3, 4)))
    s.set_defaults(run=_data_shapes)
    dc = folder("clips", "materialise clips of ShapesWorld in motion as a folder", "clips",
                "train: no held-out motion; heldout: one in every clip")
    dc.add_argument("--frames", type=number(Range(1, 63, integer=True)), default=7,
                    help="frames per clip, odd (default: %(default)s)")
    dc.set_defaults(run=_data_clips)
    folder("sounds", "materialise ShapesWorld's sounds as a folder (sounds/*.wav + data.jsonl)", "sounds",
           SPLIT.format("draw from"), default="train").set_defaults(run=_data_sounds)
    dsp = folder("speech", "ShapesWorld captions spoken by espeak-ng, as a folder of sounds", "utterances",
                 SPLIT.format("say"), default="train")
    dsp.add_argument("--voices", choices=("train", "heldout"), default="train",
                     help="espeak-ng voices training hears, or the held-out ones (default: %(default)s)")
    dsp.set_defaults(run=_data_speech)
    c = data.add_parser("check", help="validate a bring-your-own folder (of images, clips or sounds)")
    c.add_argument("dir", type=Path, help="a folder with images/ and data.jsonl")
    c.add_argument("--size", type=number(Range(1, 1024, integer=True)), default=32,
                   help="image side the images are converted to (default: %(default)s)")
    c.set_defaults(run=_data_check)

    tok = sub.add_parser("tokenizer", help="train or evaluate tokenizers").add_subparsers(
        dest="tok_cmd", required=True, metavar="WHAT", help="train or eval")
    t = tok.add_parser("train", help="train the text BPE and the image tokenizer", later=tokenizer_train_flags)
    t.set_defaults(run=_tokenizer_train)
    tv = tok.add_parser("train-video", help="train a causal video tokenizer on an image tokenizer's codebook",
                        later=video_tokenizer_flags)
    tv.set_defaults(run=_tokenizer_train_video)
    ta = tok.add_parser("train-audio", help="train a causal audio codec (residual VQ) on ShapesWorld's sounds",
                        later=audio_tokenizer_flags)
    ta.set_defaults(run=_tokenizer_train_audio)
    e = tok.add_parser("eval", help="PSNR, codebook usage, perplexity and verifier agreement")
    e.add_argument("--tokenizer", type=Path, default=None, help="a trained directory (default: the shipped one)")
    e.add_argument("--data", default="shapes", help="'shapes' or a folder with images/ and data.jsonl")
    e.add_argument("--n", type=COUNT, default=1000, help="evaluation images (default: %(default)s)")
    e.add_argument("--seed", type=SEED, default=0, help="which images (default: %(default)s)")
    e.add_argument("--split", **splits, help=SPLIT.format("evaluate on") + " (default: %(default)s)")
    e.add_argument("--json", type=Path, help="also write the metrics here")
    e.set_defaults(run=_tokenizer_eval)

    rec = sub.add_parser("recogniser", help="the speech recogniser that judges spoken words").add_subparsers(
        dest="rec_cmd", required=True, metavar="WHAT", help="train or transcribe")
    rt = rec.add_parser("train", help="train it on espeak-ng speech of ShapesWorld captions", later=recogniser_flags)
    rt.set_defaults(run=_recogniser_train)
    rh = rec.add_parser("transcribe", help="what it hears in sound files (WAV, FLAC, OGG)")
    rh.add_argument("audio", type=Path, nargs="+", help="sound files")
    rh.add_argument("--recogniser", type=Path, default=None, help="a trained directory (default: the shipped one)")
    rh.set_defaults(run=_recogniser_transcribe)

    tr = sub.add_parser("train", help="train the transformer on the task mix", later=train_flags)
    tr.set_defaults(run=_train)

    ft = sub.add_parser("finetune", help="adapt a model to a new task: full, LoRA, prompt tuning or a linear probe",
                        later=finetune_flags)
    ft.set_defaults(run=_finetune)
    r = sub.add_parser("rl", help="reinforcement learning from verifiable rewards (GRPO) on ShapesWorld prompts",
                       later=rl_flags)
    r.set_defaults(run=_rl)

    model = dict(type=Path, default=None, help="a trained or packed model directory (default: the shipped model)")
    g = sub.add_parser("generate", help="draw images (or clips, or sounds) for a prompt")
    g.add_argument("prompt", help="what to draw, e.g. 'a small red circle at the top left'")
    g.add_argument("--out", type=Path, default=Path("out.png"),
                   help="PNG to write; a .gif or .webp with --video, a .wav with --audio (default: %(default)s, "
                        "out.gif, out.wav)")
    g.add_argument("--video", action="store_true",
                   help="draw a clip, e.g. 'a small red circle moves right slowly from the top left'")
    g.add_argument("--audio", action="store_true",
                   help="make the scene's sound, e.g. 'a large blue square at the center' (docs/audio.md)")
    _drawing_flags(g, "images to draw; more than one are saved as a grid (default: %(default)s)")
    g.add_argument("--top-k", type=number("top_k"), default=None, help="0 keeps every code (default: the model's)")
    g.add_argument("--top-p", type=number("top_p"), default=None, help="nucleus sampling (default: the model's)")
    g.add_argument("--scale", type=number(Range(1, 64, integer=True)), default=4,
                   help="upscaling of the saved image or grid (default: %(default)s)")
    g.add_argument("--force", action="store_true", help="replace --out if it exists")
    g.add_argument("--best-of", type=number("best_of"), default=None,
                   help="candidates per image, the best by the verifier kept (default: the effort's)")
    g.set_defaults(run=_generate)
    c2 = sub.add_parser("caption", help="describe images, clips or sounds")
    c2.add_argument("images", nargs="+", type=Path,
                    help="image files, animated GIF/WebP clips, folders of frames or WAV/FLAC/OGG sounds")
    c2.set_defaults(run=_caption)
    a = sub.add_parser("ask", help="answer a question about an image, a clip or a sound")
    a.add_argument("image", type=Path, help="an image file, an animated GIF/WebP clip, a folder of frames or a sound")
    a.add_argument("question", help="e.g. 'how many circles are there?'")
    a.set_defaults(run=_ask)
    a.add_argument("--thinking-budget", type=number("thinking_budget"), default=None,
                   help=f"most tokens of thinking (default: {THINKING_BUDGET})")
    for command in (c2, a):
        command.add_argument("--beams", type=number("beams"), default=1, help="beam width; 1 is greedy (default: 1)")
        command.add_argument("--best-of", type=number("best_of"), default=None,
                             help="answers sampled and voted (default: the effort's)")
    cv = sub.add_parser("convert", help="a picture's sound (--out x.wav) or a picture of a sound (--out x.png)")
    cv.add_argument("item", type=Path, help="a picture (PNG, JPEG, ...) or a sound (WAV, FLAC, OGG)")
    cv.add_argument("--out", type=Path, required=True,
                    help="a .wav for a picture's sound, a .png for a sound's picture")
    _drawing_flags(cv, "how many to make, side by side or one after another (default: %(default)s)")
    cv.add_argument("--scale", type=number(Range(1, 64, integer=True)), default=4,
                    help="upscaling of a saved picture (default: %(default)s)")
    cv.add_argument("--force", action="store_true", help="replace --out if it exists")
    cv.set_defaults(run=_convert)
    nx = sub.add_parser("continue", help="continue a clip from its first frames (a small world model), or a "
                                         "sound from its first notes")
    nx.add_argument("item", type=Path, help="an animated GIF/WebP or a folder of frames, as long as the model's "
                                            "clips; or a WAV/FLAC/OGG sound, shorter than the model's")
    nx.add_argument("--given", type=number(Range(0.001, 63)), default=None,
                    help="a clip's latent frames given: 1 is the first frame alone, each more adds 4 frames "
                         "(default: 1); a sound's seconds given (default: all of it)")
    nx.add_argument("--out", type=Path, default=Path("next.gif"),
                    help="GIF or WebP to write, or WAV for a sound (default: next.gif, next.wav)")
    nx.add_argument("--n", type=number(Range(1, 64, integer=True)), default=1,
                    help="continuations, saved side by side (a sound's one after another) (default: %(default)s)")
    nx.add_argument("--seed", type=SEED, default=0, help="sampling seed (default: %(default)s)")
    nx.add_argument("--temperature", type=number("temperature"), default=0.0,
                    help="sampling temperature; 0 is greedy (default: %(default)s)")
    nx.add_argument("--scale", type=number(Range(1, 64, integer=True)), default=4,
                    help="upscaling of the saved frames (default: %(default)s)")
    nx.add_argument("--force", action="store_true", help="replace --out if it exists")
    nx.set_defaults(run=_continue)
    for command in (g, c2, a):
        command.add_argument("--effort", choices=tuple(EFFORTS), default="none",
                             help="test-time compute: thinking, votes, planned and verified drawings "
                                  "(docs/test-time.md; default: %(default)s)")
    ev = sub.add_parser("eval", help="ShapesEval: captions, QA, text-to-image, held-out split")
    ev.add_argument("--json", type=Path, help="also write the report here")
    ev.add_argument("--quick", action="store_true", help="small subsets (about a minute on 2 cores)")
    ev.add_argument("--seed", type=SEED, default=None,
                    help="the scenes' seed (default: the fixed evaluation seed, 10000); another one checks a recipe "
                         "on scenes it was not tuned on")
    ev.add_argument("--effort", nargs="+", choices=tuple(EFFORTS), default=["none"], metavar="LEVEL",
                    help="also report QA, premises and drawing at these test-time effort levels "
                         f"({', '.join(EFFORTS)}; default: none)")
    ev.set_defaults(run=_eval)

    pk = sub.add_parser("pack", help="an inference-only copy of a run (small weights, drawing defaults)")
    pk.add_argument("--model", type=Path, required=True, help="the run directory to pack")
    pk.add_argument("--out", type=Path, required=True, help="the directory to write")
    pk.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16",
                    help="stored weight type (default: %(default)s)")
    pk.add_argument("--cfg", type=number("guidance"), default=None, help="default guidance scale for drawing")
    pk.add_argument("--temperature", type=number("temperature"), default=None, help="default drawing temperature")
    pk.add_argument("--top-k", type=number("top_k"), default=None, help="default drawing top-k")
    pk.add_argument("--top-p", type=number("top_p"), default=None, help="default drawing top-p")
    pk.set_defaults(run=_pack)

    sv = sub.add_parser("serve", help="an OpenAI-compatible API and web UI for a model", later=serve_flags)
    sv.set_defaults(run=_serve)
    ch = sub.add_parser("chat", help="chat with a model in the terminal")
    ch.add_argument("--out", type=Path, default=Path("drawings"),
                    help="where /draw saves images (default: %(default)s)")
    ch.add_argument("--temperature", type=number("temperature"), default=0.0, help="0 is greedy (default: 0)")
    ch.add_argument("--seed", type=SEED, default=None, help="sampling seed (default: random)")
    ch.add_argument("--preview", choices=("auto", "always", "never"), default="auto",
                    help="show images in the terminal (auto: when it is a terminal)")
    ch.set_defaults(run=_chat)
    ex = sub.add_parser("export", help="export a model for Hugging Face transformers (Qwen3ForCausalLM "
                                       "and the image tokenizer)")
    ex.add_argument("--out", type=Path, required=True, help="the directory to write")
    ex.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                    help="stored weight type (default: %(default)s)")
    ex.add_argument("--force", action="store_true", help="replace --out if it exists")
    ex.set_defaults(run=_export)
    b = sub.add_parser("bench", help="speed against transformers, and against this machine's roofline")
    b.add_argument("--quick", action="store_true", help="small sizes: seconds, a smoke run (what CI runs)")
    b.add_argument("--json", type=Path, help="also write the figures here")
    b.set_defaults(run=_bench)
    d = sub.add_parser("demo", help="the main job on the shipped default")
    d.add_argument("--out", type=Path, default=Path("demo"), help="where the gallery goes (default: %(default)s)")
    d.add_argument("--quick", action="store_true", help="its ShapesEval on eval --quick's items: a check that it "
                                                        "runs, not figures to quote")
    d.set_defaults(run=_demo)
    for command in (g, c2, a, nx, cv, ev, sv, ch, ex, b):  # everything that reads a model
        command.add_argument("--model", **model)
    for command in (g, c2, a, nx, cv, ev, sv, ch, ex, pk):  # everything a fine-tuned adapter may ride on
        command.add_argument("--adapter", type=Path, default=None,
                             help="a LoRA or prompt-tuning directory (smalto finetune) trained on --model, "
                                  "applied on top of it" + (" (LoRA merged into the weights)" if command in (ex, pk)
                                                            else ""))
    for command in (g, c2, a, nx, cv, ev, sv, ch, b):  # everything that runs a model for inference
        command.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",  # smalto.precision's
                             help="the decoder's float type (auto: bf16 where the hardware has it natively)")
    for command in (c, e, c2, a, nx, cv, ch):  # what else reads a user's image files (train, serve: from their configs)
        command.add_argument("--max-image-pixels", type=COUNT, default=MAX_PIXELS,
                             help=f"{PIXELS} (default {MAX_PIXELS:,} = 4096×4096)")
    for command in (sv, ch):  # long-running: compiling once pays
        command.add_argument("--compile", action="store_true",
                             help="compile the decoding step (seconds on first use, faster afterwards)")
    if not lazy:
        for command in (t, tv, tr, ft, r, sv):
            command.ready()
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(lazy=True).parse_args(argv)
    args.argv = argv  # `train --resume` needs to know which flags were given
    try:
        args.run(args)
    except SmaltoError as e:
        print(f"smalto: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("smalto: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
