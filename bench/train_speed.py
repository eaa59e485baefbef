"""Training throughput of a preset on this machine: tokens/s, peak memory, model FLOP/s.

    python bench/train_speed.py --preset shapes-tiny --batch 32 --seq 100        # CPU: eager, then compiled
    python bench/train_speed.py --preset base --batch 16 --seq 2048 --optimizer muon

One step is what `smalto train` does per batch (forward under bf16 autocast where the hardware
has it, loss, backward, clipping, the optimizer) on random tokens of full length, so the figures
depend on the model, batch and device only. Each variant (eager / compiled) runs in the same
process, so their ratio is meaningful on a noisy machine; the compiled one also reports how long
compiling took. The result is printed and, with --json, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from smalto import precision
from smalto.apps.bench import model_costs
from smalto.model import Transformer, preset
from smalto.training.optim import OPTIMIZERS, build_optimizer
from smalto.training.trainer import token_losses

VOCAB = 1024  # about the shipped vocabulary's size; the vocabulary is a small share of these models


def measure(args: argparse.Namespace, compiled: bool, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = Transformer(preset(args.preset, VOCAB, args.experts, max_seq_len=max(args.seq, 16))).to(device).train()
    opt = build_optimizer(model, args.optimizer, 1e-4, 0.1)
    bf16 = precision.resolve("auto", device) == torch.bfloat16
    ids = torch.randint(0, VOCAB, (args.batch, args.seq + 1), device=device)
    positions = torch.arange(args.seq, device=device).expand(args.batch, 3, args.seq)
    mask = torch.ones(args.batch, args.seq, dtype=torch.bool, device=device)
    tasks = torch.zeros(args.batch, dtype=torch.long, device=device)

    def forward_loss():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(ids[:, :-1], positions).logits
        summed, stats = token_losses(logits, ids[:, 1:], mask, tasks)
        return summed / stats[0]

    fn = torch.compile(forward_loss) if compiled else forward_loss

    def step():
        fn().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    for _ in range(2):
        step()
    sync()
    warm = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]  # the median step
    tokens = args.batch * args.seq
    flops = 3 * model_costs(model, args.seq // 2, torch.bfloat16 if bf16 else torch.float32)["flops_per_token"]
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"compiled": compiled, "ms_per_step": 1000 * seconds, "tokens_per_s": tokens / seconds,
            "model_tflops": tokens / seconds * flops / 1e12, "peak_gib": peak / 2 ** 30,
            "warmup_s": warm, "params": model.num_params()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="shapes-tiny")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=100)
    p.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    p.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS)
    p.add_argument("--experts", type=int, default=0)
    p.add_argument("--only", choices=("eager", "compiled"), help="measure one variant")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for compiled in (False, True):
        if args.only and args.only != ("compiled" if compiled else "eager"):
            continue
        r = measure(args, compiled, device)
        results.append(r)
        print(f"{args.preset} ({r['params'] / 1e6:.1f} M) {args.optimizer} batch {args.batch}x{args.seq} on "
              f"{device.type}, {'compiled' if compiled else 'eager'}: {r['ms_per_step']:.1f} ms/step, "
              f"{r['tokens_per_s']:,.0f} tok/s, {r['model_tflops']:.2f} TFLOP/s, peak {r['peak_gib']:.2f} GiB "
              f"(warm-up {r['warmup_s']:.1f} s)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
