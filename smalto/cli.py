"""`smalto ...`: a thin command line over the Python API; each command is a few lines."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from smalto import __version__, atomic
from smalto.errors import SmaltoError


def _data_shapes(args: argparse.Namespace) -> None:
    from smalto.data import ShapesConfig, write_shapes

    if args.n < 1:
        raise SmaltoError("--n must be at least 1")
    cfg = ShapesConfig(image_size=args.size, max_objects=args.max_objects)
    out = write_shapes(args.out, args.n, seed=args.seed, split=args.split, cfg=cfg, force=args.force)
    print(f"wrote {args.n} scenes to {out}/ (images/ + data.jsonl)")


def _data_check(args: argparse.Namespace) -> None:
    from smalto.data import load_folder

    folder = load_folder(args.dir, args.size, progress=True)
    scenes = sum(r.scene is not None for r in folder.records)
    qa = sum(len(r.qa) for r in folder.records)
    print(f"{args.dir}: {len(folder)} records, {qa} question-answer pairs, {scenes} scene graphs: OK")


def _tokenizer_train(args: argparse.Namespace) -> None:
    from smalto.tokenizers.train import TokenizerTrainConfig, train_tokenizers

    cfg = TokenizerTrainConfig(data=args.data, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                               seed=args.seed, text_vocab_size=args.text_vocab_size,
                               eval_images=args.eval_images, shapes_split=args.split)
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

    if args.n < 1:
        raise SmaltoError("--n must be at least 1")
    tok = load_tokenizers(args.tokenizer)
    data = ImageData(args.data, tok.image.cfg.image_size, args.n, args.seed, holdout=False, eval_split=args.split)
    metrics, _ = evaluate_image_tokenizer(tok.image, data.eval, data.has_scenes, data.shapes_cfg)
    print(f"tokenizer: {tok.path}\ndata:      {args.data}")
    print(metrics.table())
    if args.json:
        report = {"tokenizer": str(tok.path), "data": args.data, **asdict(metrics),
                  "text_vocab_size": tok.text.vocab_size}
        atomic.write_text(args.json, json.dumps(report, indent=2) + "\n")


def _demo(args: argparse.Namespace) -> None:
    from smalto.demo import run_demo

    run_demo(args.out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smalto", description="Unified multimodal next-token prediction.")
    p.add_argument("--version", action="version", version=f"smalto {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="make or check datasets").add_subparsers(dest="data_cmd", required=True)
    s = data.add_parser("shapes", help="materialise ShapesWorld scenes as images/ + data.jsonl")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--n", type=int, required=True, help="number of scenes")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", choices=("train", "heldout", "all"), default="train")
    s.add_argument("--size", type=int, default=32, help="image side in pixels")
    s.add_argument("--max-objects", type=int, default=3, choices=(1, 2, 3, 4))
    s.add_argument("--force", action="store_true", help="replace --out if it exists")
    s.set_defaults(run=_data_shapes)
    c = data.add_parser("check", help="validate a bring-your-own folder")
    c.add_argument("dir", type=Path)
    c.add_argument("--size", type=int, default=32)
    c.set_defaults(run=_data_check)

    tok = sub.add_parser("tokenizer", help="train or evaluate tokenizers").add_subparsers(
        dest="tok_cmd", required=True)
    t = tok.add_parser("train", help="train the text BPE and the image tokenizer")
    t.add_argument("--data", default="shapes", help="'shapes' or a folder with images/ and data.jsonl")
    t.add_argument("--quantizer", choices=("vq", "lfq"), default="vq")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--steps", type=int, default=4000)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--codebook-size", type=int, default=512)
    t.add_argument("--eval-images", type=int, default=1000)
    t.add_argument("--entropy-weight", type=float, default=0.05, help="LFQ: initial entropy-loss weight")
    t.add_argument("--entropy-anneal", type=float, default=0.2,
                   help="LFQ: final entropy weight as a fraction of the initial one")
    t.add_argument("--split", choices=("train", "heldout", "all"), default="all",
                   help="ShapesWorld compositions to train on (default: all; see docs/shapesworld.md)")
    t.add_argument("--text-vocab-size", type=int, default=512)
    t.add_argument("--text-file", type=Path, action="append", default=[],
                   help="extra UTF-8 text for the BPE (repeatable)")
    t.add_argument("--force", action="store_true", help="replace --out if it exists")
    t.set_defaults(run=_tokenizer_train)
    e = tok.add_parser("eval", help="PSNR, codebook usage, perplexity and verifier agreement")
    e.add_argument("--tokenizer", type=Path, default=None, help="a trained directory (default: shipped)")
    e.add_argument("--data", default="shapes", help="'shapes' or a folder with images/ and data.jsonl")
    e.add_argument("--n", type=int, default=1000, help="evaluation images")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--split", choices=("train", "heldout", "all"), default="all",
                   help="ShapesWorld compositions to evaluate on")
    e.add_argument("--json", type=Path, help="also write the metrics here")
    e.set_defaults(run=_tokenizer_eval)

    d = sub.add_parser("demo", help="the main job on the shipped default")
    d.add_argument("--out", type=Path, default=Path("demo"))
    d.set_defaults(run=_demo)
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
