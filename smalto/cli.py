"""`smalto ...`: a thin command line over the Python API; each command is a few lines."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from smalto import __version__, atomic
from smalto.data.images import MAX_PIXELS
from smalto.errors import SmaltoError
from smalto.options import SAMPLING, Range


def _number(spec: Range | str):
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


COUNT = _number(Range(1, integer=True))
EVERY = _number(Range(0, integer=True))  # 0: never
POSITIVE = _number(Range(0, low_open=True))
WEIGHT = _number(Range(0))
FRACTION = _number(Range(0, 1))
SEED = _number("seed")


def _data_shapes(args: argparse.Namespace) -> None:
    from smalto.data import ShapesConfig, write_shapes

    cfg = ShapesConfig(image_size=args.size, max_objects=args.max_objects)
    out = write_shapes(args.out, args.n, seed=args.seed, split=args.split, cfg=cfg, force=args.force)
    print(f"wrote {args.n} scenes to {out}/ (images/ + data.jsonl)")


def _data_check(args: argparse.Namespace) -> None:
    from smalto.data import load_folder

    folder = load_folder(args.dir, args.size, progress=True, max_pixels=args.max_image_pixels)
    scenes = sum(r.scene is not None for r in folder.records)
    qa = sum(len(r.qa) for r in folder.records)
    print(f"{args.dir}: {len(folder)} records, {qa} question-answer pairs, {scenes} scene graphs: OK")


def _tokenizer_train(args: argparse.Namespace) -> None:
    from smalto.tokenizers.train import TokenizerTrainConfig, train_tokenizers

    cfg = TokenizerTrainConfig(data=args.data, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                               seed=args.seed, text_vocab_size=args.text_vocab_size,
                               eval_images=args.eval_images, shapes_split=args.split,
                               max_image_pixels=args.max_image_pixels)
    cfg.image = replace(cfg.image, quantizer=args.quantizer, codebook_size=args.codebook_size,
                        entropy_weight=args.entropy_weight)
    cfg.entropy_anneal = args.entropy_anneal
    metrics = train_tokenizers(args.out, cfg, text_files=args.text_file, force=args.force)
    print(metrics.table())
    print(f"wrote {args.out}/ (text.json, image.safetensors, image.json, loss.png, reconstructions.png)")


def _tokenizer_eval(args: argparse.Namespace) -> None:
    from smalto.tokenizers import load_tokenizers
    from smalto.tokenizers.evaluate import evaluate_image_tokenizer
    from smalto.tokenizers.train import ImageData

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


def _train(args: argparse.Namespace) -> None:
    from smalto.stream import TaskMix
    from smalto.train import TrainConfig, train

    if args.resume:
        from smalto.checkpoint import read_meta

        saved = read_meta(args.out).get("train")
        if not isinstance(saved, dict):
            raise SmaltoError(f"{args.out}/meta.json: no training config to resume from")
        # A folder named in meta.json is read only when the user names it too: a run directory
        # from someone else must not make smalto read the user's files.
        data = saved.get("data", "shapes")
        if data != "shapes" and args.data != data:
            raise SmaltoError(f"{args.out}: this run was trained on the folder {data!r}; to resume it, "
                              f"name that folder yourself: --data {data}")
        cfg = TrainConfig(**{**saved, **({"steps": args.steps} if args.steps else {})})
    else:
        cfg = TrainConfig(preset=args.preset, data=args.data or "shapes", tokenizers=args.tokenizers,
                          steps=args.steps or 3000, batch_size=args.batch_size, grad_accum=args.grad_accum,
                          lr=args.lr, seed=args.seed, eval_every=args.eval_every, save_every=args.save_every,
                          mix=TaskMix(args.mix[0], args.mix[1], args.mix[2], args.cond_dropout,
                                      qa_turns=args.qa_turns), precision=args.precision,
                          max_image_pixels=args.max_image_pixels)
    evaluate_fn = None
    if cfg.eval_every and cfg.data == "shapes":
        from smalto.evaluate import training_probe

        evaluate_fn = training_probe
    log = train(args.out, cfg, resume=args.resume, evaluate_fn=evaluate_fn, pause_at=args.pause_at)
    last = [r for r in log if "loss" in r][-1]
    print(f"step {last['step'] + 1} of {cfg.steps}: loss {last['loss']:.4f}; checkpoint in {args.out}/")


def _pipeline(path, dtype: str = "auto", compile: bool = False):
    from smalto.pipeline import load

    if compile:
        print("smalto: compiling the decoding step (about 20 s on 2 cores)", file=sys.stderr, flush=True)
    return load(path, dtype, compile)


def _generate(args: argparse.Namespace) -> None:
    from smalto.plots import image_grid, save_png

    if Path(args.out).is_dir():
        raise SmaltoError(f"{args.out}: is a directory; give a .png file name")
    pipe = _pipeline(args.model, args.dtype)
    images = pipe.generate_image(args.prompt, n=args.n, guidance=args.cfg, seed=args.seed,
                                 temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    out = Path(args.out)
    if args.n == 1:
        save_png(out, images[0])
    else:
        save_png(out, image_grid([np.stack(images)], scale=args.scale))
    print(f"wrote {out} ({args.n} image{'s' if args.n > 1 else ''})")


def _caption(args: argparse.Namespace) -> None:
    pipe = _pipeline(args.model, args.dtype)
    pipe.max_image_pixels = args.max_image_pixels
    for image in args.images:
        text = pipe.caption(image, beams=args.beams)
        print(f"{image}: {text}" if len(args.images) > 1 else text)


def _ask(args: argparse.Namespace) -> None:
    pipe = _pipeline(args.model, args.dtype)
    pipe.max_image_pixels = args.max_image_pixels
    print(pipe.ask(args.image, args.question, beams=args.beams))


def _eval(args: argparse.Namespace) -> None:
    from smalto.evaluate import EvalConfig, evaluate, summary_table

    pipe = _pipeline(args.model, args.dtype)
    cfg = EvalConfig() if not args.quick else EvalConfig(captions=40, questions=80, drawings=16,
                                                         sweep_prompts=8)
    report = evaluate(pipe, cfg)
    print(summary_table(report))
    if args.json:
        atomic.write_text(args.json, json.dumps({"model": str(pipe.path), **report}, indent=2) + "\n")


def _pack(args: argparse.Namespace) -> None:
    import torch

    from smalto.checkpoint import pack

    draw = {k: v for k, v in (("guidance", args.cfg), ("temperature", args.temperature),
                              ("top_k", args.top_k), ("top_p", args.top_p)) if v is not None}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.dtype]
    out = pack(args.model, args.out, dtype, draw)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out}/ ({size / 1e6:.1f} MB)")


def _serve(args: argparse.Namespace) -> None:
    from smalto.serve import ServeConfig, run_server

    pipe = _pipeline(args.model, args.dtype, args.compile)
    name = args.model_name or pipe.name
    cfg = ServeConfig(model_name=name, api_key=args.api_key or None, max_queue=args.max_queue,
                      max_batch=args.max_batch, timeout=args.timeout, max_body_bytes=int(args.max_body_mb * 2**20),
                      max_image_pixels=args.max_image_pixels)
    print(f"smalto: serving {name} on http://{args.host}:{args.port}/ (API at /v1, web UI at /)", flush=True)
    run_server(pipe, cfg, args.host, args.port, args.log_level)


def _chat(args: argparse.Namespace) -> None:
    from smalto.engine import Sampling
    from smalto.serve.terminal import run_terminal_chat

    pipe = _pipeline(args.model, args.dtype, args.compile)
    pipe.max_image_pixels = args.max_image_pixels
    run_terminal_chat(pipe, args.out, Sampling(args.temperature, seed=args.seed), args.preview)


def _export(args: argparse.Namespace) -> None:
    import torch

    from smalto.export import export_hf
    from smalto.pipeline import DEFAULT_MODEL

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    out = export_hf(args.model or DEFAULT_MODEL, args.out, dtype, force=args.force)
    print(f"wrote {out}/ (transformers: AutoModelForCausalLM.from_pretrained('{out}'); images: {out}/image_tokenizer)")


def _bench(args: argparse.Namespace) -> None:
    from smalto.benchmark import BenchConfig, run, table

    pipe = _pipeline(args.model, args.dtype)
    report = run(pipe, BenchConfig(quick=args.quick), progress=lambda line: print(line, flush=True))
    print()
    print(table(report))
    if args.json:
        atomic.write_text(args.json, json.dumps(report, indent=2) + "\n")


def _demo(args: argparse.Namespace) -> None:
    from smalto.demo import run_demo

    run_demo(args.out)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """A bad flag reads like every other user error: one `smalto: error:` line, exit 2."""
        self.exit(2, f"smalto: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="smalto", description="Unified multimodal next-token prediction.")
    p.add_argument("--version", action="version", version=f"smalto {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="make or check datasets").add_subparsers(dest="data_cmd", required=True)
    s = data.add_parser("shapes", help="materialise ShapesWorld scenes as images/ + data.jsonl")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--n", type=COUNT, required=True, help="number of scenes")
    s.add_argument("--seed", type=SEED, default=0)
    s.add_argument("--split", choices=("train", "heldout", "all"), default="train")
    s.add_argument("--size", type=_number(Range(12, 1024, integer=True)), default=32, help="image side in pixels")
    s.add_argument("--max-objects", type=int, default=3, choices=(1, 2, 3, 4))
    s.add_argument("--force", action="store_true", help="replace --out if it exists")
    s.set_defaults(run=_data_shapes)
    c = data.add_parser("check", help="validate a bring-your-own folder")
    c.add_argument("dir", type=Path)
    c.add_argument("--size", type=_number(Range(1, 1024, integer=True)), default=32,
                   help="image side the images are converted to")
    c.set_defaults(run=_data_check)

    tok = sub.add_parser("tokenizer", help="train or evaluate tokenizers").add_subparsers(
        dest="tok_cmd", required=True)
    t = tok.add_parser("train", help="train the text BPE and the image tokenizer")
    t.add_argument("--data", default="shapes", help="'shapes' or a folder with images/ and data.jsonl")
    t.add_argument("--quantizer", choices=("vq", "lfq"), default="vq")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--steps", type=COUNT, default=4000)
    t.add_argument("--batch-size", type=COUNT, default=32)
    t.add_argument("--lr", type=POSITIVE, default=2e-3)
    t.add_argument("--seed", type=SEED, default=0)
    t.add_argument("--codebook-size", type=_number(Range(2, integer=True)), default=512)
    t.add_argument("--eval-images", type=COUNT, default=1000)
    t.add_argument("--entropy-weight", type=WEIGHT, default=0.05, help="LFQ: initial entropy-loss weight")
    t.add_argument("--entropy-anneal", type=FRACTION, default=0.2,
                   help="LFQ: final entropy weight as a fraction of the initial one")
    t.add_argument("--split", choices=("train", "heldout", "all"), default="all",
                   help="ShapesWorld compositions to train on (default: all; see docs/shapesworld.md)")
    t.add_argument("--text-vocab-size", type=COUNT, default=512)
    t.add_argument("--text-file", type=Path, action="append", default=[],
                   help="extra UTF-8 text for the BPE (repeatable)")
    t.add_argument("--force", action="store_true", help="replace --out if it exists")
    t.set_defaults(run=_tokenizer_train)
    e = tok.add_parser("eval", help="PSNR, codebook usage, perplexity and verifier agreement")
    e.add_argument("--tokenizer", type=Path, default=None, help="a trained directory (default: shipped)")
    e.add_argument("--data", default="shapes", help="'shapes' or a folder with images/ and data.jsonl")
    e.add_argument("--n", type=COUNT, default=1000, help="evaluation images")
    e.add_argument("--seed", type=SEED, default=0)
    e.add_argument("--split", choices=("train", "heldout", "all"), default="all",
                   help="ShapesWorld compositions to evaluate on")
    e.add_argument("--json", type=Path, help="also write the metrics here")
    e.set_defaults(run=_tokenizer_eval)

    tr = sub.add_parser("train", help="train the transformer on the task mix")
    tr.add_argument("--out", type=Path, required=True, help="run directory (checkpoint, log, plots)")
    tr.add_argument("--preset", default="shapes-tiny")
    tr.add_argument("--data", default=None, help="'shapes' (the default) or a folder with images/ and data.jsonl")
    tr.add_argument("--tokenizers", type=Path, default=None, help="tokenizer directory (default: shipped)")
    tr.add_argument("--steps", type=COUNT, default=None, help="total steps (default 3000)")
    tr.add_argument("--batch-size", type=COUNT, default=32)
    tr.add_argument("--grad-accum", type=COUNT, default=1)
    tr.add_argument("--lr", type=POSITIVE, default=2e-3)
    tr.add_argument("--seed", type=SEED, default=0)
    tr.add_argument("--mix", type=WEIGHT, nargs=3, default=(0.3, 0.4, 0.3), metavar=("CAPTION", "DRAW", "QA"))
    tr.add_argument("--cond-dropout", type=FRACTION, default=0.1)
    tr.add_argument("--qa-turns", type=COUNT, default=1, help="question-answer turns per QA example")
    tr.add_argument("--eval-every", type=EVERY, default=500)
    tr.add_argument("--save-every", type=COUNT, default=500)
    tr.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                    help="matmuls in bf16 autocast (auto: where the hardware has native bf16)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--pause-at", type=COUNT, default=None,
                    help="stop with a checkpoint at this step; --resume continues the same schedule")
    tr.set_defaults(run=_train)

    g = sub.add_parser("generate", help="draw images for a prompt")
    g.add_argument("prompt")
    g.add_argument("--out", type=Path, default=Path("out.png"))
    g.add_argument("--n", type=_number(Range(1, 64, integer=True)), default=1)
    g.add_argument("--cfg", type=_number("guidance"), default=None,
                   help="classifier-free guidance scale (default: the model's)")
    g.add_argument("--seed", type=SEED, default=0)
    g.add_argument("--temperature", type=_number("temperature"), default=None)
    g.add_argument("--top-k", type=_number("top_k"), default=None)
    g.add_argument("--top-p", type=_number("top_p"), default=None)
    g.add_argument("--scale", type=_number(Range(1, 64, integer=True)), default=4, help="upscaling of the saved grid")
    g.add_argument("--model", type=Path, default=None, help="model directory (default: shipped)")
    g.set_defaults(run=_generate)
    c2 = sub.add_parser("caption", help="describe images")
    c2.add_argument("images", nargs="+", type=Path)
    c2.add_argument("--beams", type=_number("beams"), default=1)
    c2.add_argument("--model", type=Path, default=None)
    c2.set_defaults(run=_caption)
    a = sub.add_parser("ask", help="answer a question about an image")
    a.add_argument("image", type=Path)
    a.add_argument("question")
    a.add_argument("--beams", type=_number("beams"), default=1)
    a.add_argument("--model", type=Path, default=None)
    a.set_defaults(run=_ask)
    ev = sub.add_parser("eval", help="ShapesEval: captions, QA, text-to-image, held-out split")
    ev.add_argument("--model", type=Path, default=None)
    ev.add_argument("--json", type=Path)
    ev.add_argument("--quick", action="store_true", help="small subsets (seconds, for smoke tests)")
    ev.set_defaults(run=_eval)

    pk = sub.add_parser("pack", help="an inference-only copy of a run (small weights, drawing defaults)")
    pk.add_argument("--model", type=Path, required=True)
    pk.add_argument("--out", type=Path, required=True)
    pk.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    pk.add_argument("--cfg", type=_number("guidance"), default=None, help="default guidance scale for drawing")
    pk.add_argument("--temperature", type=_number("temperature"), default=None)
    pk.add_argument("--top-k", type=_number("top_k"), default=None)
    pk.add_argument("--top-p", type=_number("top_p"), default=None)
    pk.set_defaults(run=_pack)

    sv = sub.add_parser("serve", help="an OpenAI-compatible API and web UI for a model")
    sv.add_argument("--model", type=Path, help="a trained or packed model directory (default: the shipped model)")
    sv.add_argument("--model-name", help="the id clients ask for (default: the directory's name)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=_number(Range(0, 65535, integer=True)), default=8000)
    sv.add_argument("--api-key", default=os.environ.get("SMALTO_API_KEY"),
                    help="require 'Authorization: Bearer KEY' on /v1 (default: $SMALTO_API_KEY)")
    sv.add_argument("--max-queue", type=COUNT, default=64, help="requests waiting for the model; more get 503")
    sv.add_argument("--max-batch", type=COUNT, default=16, help="rows decoded together")
    sv.add_argument("--timeout", type=POSITIVE, default=60.0, help="seconds a request may take, queue wait included")
    sv.add_argument("--max-body-mb", type=POSITIVE, default=16.0, help="larger request bodies get 413")
    sv.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    sv.set_defaults(run=_serve)
    ch = sub.add_parser("chat", help="chat with a model in the terminal")
    ch.add_argument("--model", type=Path, help="a trained or packed model directory (default: the shipped model)")
    ch.add_argument("--out", type=Path, default=Path("drawings"), help="where /draw saves images")
    ch.add_argument("--temperature", type=_number("temperature"), default=0.0, help="0 is greedy")
    ch.add_argument("--seed", type=SEED, default=None)
    ch.add_argument("--preview", choices=("auto", "always", "never"), default="auto",
                    help="show images in the terminal (auto: when it is a terminal)")
    ch.set_defaults(run=_chat)
    ex = sub.add_parser("export", help="export a model for other engines (Hugging Face transformers)")
    ex.add_argument("--model", type=Path, help="a trained or packed model directory (default: the shipped model)")
    ex.add_argument("--format", choices=("hf",), default="hf")
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    ex.add_argument("--force", action="store_true", help="replace --out if it exists")
    ex.set_defaults(run=_export)
    b = sub.add_parser("bench", help="speed against transformers, and against this machine's roofline")
    b.add_argument("--model", type=Path, help="a model directory (default: the shipped model)")
    b.add_argument("--quick", action="store_true", help="small sizes: seconds, a smoke run (what CI runs)")
    b.add_argument("--json", type=Path, help="also write the figures here")
    b.set_defaults(run=_bench)
    d = sub.add_parser("demo", help="the main job on the shipped default")
    d.add_argument("--out", type=Path, default=Path("demo"))
    d.set_defaults(run=_demo)
    for command in (g, c2, a, ev, sv, ch, b):  # everything that runs a model for inference
        command.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                             help="the decoder's float type (auto: bf16 where the hardware has it natively)")
    for command in (c, t, e, tr, c2, a, sv, ch):  # everything that reads a user's image files
        command.add_argument("--max-image-pixels", type=COUNT, default=MAX_PIXELS,
                             help=f"refuse larger images before decoding them (default {MAX_PIXELS:,} = 4096×4096)")
    for command in (sv, ch):  # long-running: compiling once pays
        command.add_argument("--compile", action="store_true",
                             help="compile the decoding step (seconds on first use, faster afterwards)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
