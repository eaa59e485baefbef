"""`smalto bench`: smalto against Hugging Face `transformers`, same weights, same run, same CPU.

- training step: forward + backward + AdamW step, tokens/s, smalto's loop vs the exported
  Qwen3ForCausalLM with the same loss, batch and optimizer;
- prefill and decode: tokens/s at batch 1 and 16, KV-cached, greedy, a fixed number of new tokens,
  smalto's engine vs `model.generate`;
- drawing: seconds per 32x32 image (64 codes with guidance, image decoder included), batch 1 and 16;
- roofline: this machine's matmul GFLOP/s and memory bandwidth (microbenchmarks), the model's
  FLOPs and bytes per token, and each figure above as a fraction of the limit they set.

Absolute times on a shared 2-core machine are noisy; the ratios, measured in one run, are what count.
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from smalto import precision
from smalto.inference import Sampling
from smalto.model import Transformer
from smalto.pipeline import Pipeline
from smalto.format import Allowed, caption_prompt
from smalto.training.trainer import task_losses


@dataclass(frozen=True)
class BenchConfig:
    quick: bool = False

    @property
    def sizes(self) -> dict:
        if self.quick:
            return dict(train_batch=4, train_len=32, train_steps=2, prompt=16, new=8, batches=(1, 4), repeats=1,
                        matmul=256, bandwidth_mb=16, draw=(1, 2))
        return dict(train_batch=32, train_len=128, train_steps=6, prompt=64, new=64, batches=(1, 16), repeats=3,
                    matmul=1024, bandwidth_mb=256, draw=(1, 16))


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """The fastest of `repeats` runs, in seconds (the least disturbed by the rest of the machine)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# --- the machine

def machine_limits(cfg: BenchConfig) -> dict:
    n, repeats = cfg.sizes["matmul"], max(cfg.sizes["repeats"], 3)
    out = {"threads": torch.get_num_threads()}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        out[f"matmul_gflops_{name}"] = 2 * n ** 3 / best_time(lambda: a @ b, repeats) / 1e9
    x = torch.empty(cfg.sizes["bandwidth_mb"] * 2 ** 20 // 4)
    y = torch.empty_like(x)
    out["bandwidth_gbs"] = 2 * x.numel() * 4 / best_time(lambda: y.copy_(x), repeats) / 1e9
    return out


def model_costs(model: Transformer, context: int, dtype: torch.dtype) -> dict:
    """Forward FLOPs per token (matmuls + attention over `context` tokens), weight and KV bytes."""
    c, size = model.cfg, torch.finfo(dtype).bits // 8
    matmul_params = sum(p.numel() for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n)
    # A mixture of experts' stacked experts [E, ...]: a token passes through active_experts of them.
    matmul_params += sum(p.numel() * c.active_experts // c.experts for p in model.parameters() if p.ndim == 3)
    if c.tie_embeddings:
        matmul_params += model.lm_head.weight.numel()  # the tied head is a matmul too
    attention = 2 * 2 * c.n_layers * context * c.n_heads * c.head_dim  # q.k and p.v
    return {"flops_per_token": 2 * matmul_params + attention, "weight_bytes": matmul_params * size,
            "kv_bytes_per_token": 2 * c.n_layers * c.n_kv_heads * c.head_dim * size}


# --- the peer

def hf_peer(pipe: Pipeline):
    """The same weights as a stock transformers model, loaded from an export."""
    from transformers import AutoModelForCausalLM

    from smalto.checkpoint import save_checkpoint
    from smalto.export import export_hf

    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp) / "run", pipe.model, pipe.vocab, pipe.tokenizers)
        export_hf(Path(tmp) / "run", Path(tmp) / "hf")
        return AutoModelForCausalLM.from_pretrained(Path(tmp) / "hf").eval()


# --- the measurements

def train_step(model: torch.nn.Module, forward: Callable, cfg: BenchConfig, vocab_size: int,
               dtype: torch.dtype, compiled: bool = False) -> float:
    """Tokens/s of forward + loss + backward + clip + AdamW step, smalto's training recipe
    (float32 weights, matmuls under autocast when `dtype` is bfloat16); `compiled`: the forward
    and loss under torch.compile, as `smalto train --compile` runs them."""
    s = cfg.sizes
    torch.manual_seed(0)
    ids = torch.randint(0, vocab_size, (s["train_batch"], s["train_len"] + 1))
    mask = torch.ones(s["train_batch"], s["train_len"], dtype=torch.bool)
    tasks = torch.zeros(s["train_batch"], dtype=torch.long)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def forward_loss():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            logits = forward(ids[:, :-1])
        return task_losses(logits, ids[:, 1:], mask, tasks)[0]

    loss_fn = torch.compile(forward_loss) if compiled else forward_loss

    def step():
        loss_fn().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    seconds = best_time(step, s["train_steps"], warmup=2)
    model.eval()
    return s["train_batch"] * s["train_len"] / seconds


def generation(generate: Callable[[list[list[int]], int], object], prompt: list[int], batch: int,
               cfg: BenchConfig) -> dict:
    """Prefill and decode tokens/s: one new token is (almost) only the prefill; the rest is decoding."""
    s = cfg.sizes
    prompts = [prompt] * batch
    first = best_time(lambda: generate(prompts, 1), s["repeats"])
    full = best_time(lambda: generate(prompts, s["new"]), s["repeats"])
    per_step = (full - first) / (s["new"] - 1)
    return {"prefill_tok_s": batch * len(prompt) / first, "decode_tok_s": batch / per_step,
            "decode_ms_per_step": 1000 * per_step}


def draw_time(pipe: Pipeline, n: int, cfg: BenchConfig) -> float:
    return best_time(lambda: pipe.generate_image("a small red circle at the center", n=n, seed=0),
                     cfg.sizes["repeats"])


def run(pipe: Pipeline, cfg: BenchConfig = BenchConfig(), progress: Callable[[str], None] = print) -> dict:
    s = cfg.sizes
    torch.manual_seed(0)
    limits = machine_limits(cfg)
    progress(f"machine: {limits['matmul_gflops_fp32']:.0f} GFLOP/s fp32 and {limits['matmul_gflops_bf16']:.0f} "
             f"bf16 matmul, {limits['bandwidth_gbs']:.1f} GB/s copy, {limits['threads']} threads")
    model, vocab = pipe.model, pipe.vocab
    dtype, train_dtype = model.embed.weight.dtype, precision.resolve("auto")
    hf = {"fp32": hf_peer(pipe)}
    hf["same"] = copy.deepcopy(hf["fp32"]).to(dtype)
    report: dict = {"quick": cfg.quick, "machine": limits, "params": model.num_params(), "sizes": s,
                    "dtype": str(dtype).removeprefix("torch."), "train_dtype": str(train_dtype).removeprefix("torch.")}

    # prefill and decode
    codes = torch.randint(0, vocab.ranges["image"].size, (8, 8))
    prompt = (caption_prompt(vocab, codes) * 2)[:s["prompt"]]

    def ours(prompts, n):
        return pipe.engine.generate(prompts, n, Sampling(), Allowed(eos=False))

    def theirs(peer):
        @torch.inference_mode()
        def generate(prompts, n):
            return peer.generate(torch.tensor(prompts), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                 pad_token_id=vocab.pad, eos_token_id=vocab.eos)
        return generate

    report["generate"] = {}
    for batch in s["batches"]:
        row = {"smalto": generation(ours, prompt, batch, cfg),
               **{f"hf_{k}": generation(theirs(peer), prompt, batch, cfg) for k, peer in hf.items()}}
        report["generate"][batch] = row
        decode = {k: f"{v['decode_tok_s']:,.0f}" for k, v in row.items()}
        progress(f"batch {batch:2}: decode smalto {decode['smalto']} tok/s, transformers {decode['hf_fp32']} (fp32) / "
                 f"{decode['hf_same']} ({report['dtype']})")

    # drawing
    report["draw"] = {n: draw_time(pipe, n, cfg) for n in s["draw"]}
    progress("draw: " + ", ".join(f"{n} image(s) {t:.3f} s" for n, t in report["draw"].items()))

    # the same with the decoding step compiled (not in --quick: compiling takes seconds)
    if not cfg.quick:
        start = time.perf_counter()
        pipe.engine.compile()
        for batch in s["batches"]:  # compile for each shape before timing
            ours([prompt] * batch, 2)
        for n in s["draw"]:
            draw_time(pipe, n, cfg)
        report["compile_seconds"] = time.perf_counter() - start
        for batch in s["batches"]:
            report["generate"][batch]["smalto_compiled"] = generation(ours, prompt, batch, cfg)
        report["draw_compiled"] = {n: draw_time(pipe, n, cfg) for n in s["draw"]}
        pipe.engine.compile(False)
        progress(f"compiled ({report['compile_seconds']:.0f} s to compile): decode " + ", ".join(
            f"batch {b} {g['smalto_compiled']['decode_tok_s']:,.0f} tok/s" for b, g in report["generate"].items())
            + "; draw " + ", ".join(f"{n} {t:.3f} s" for n, t in report["draw_compiled"].items()))

    # training (on copies: the optimizer changes the weights)
    ours_train = copy.deepcopy(model).float()
    report["train"] = {
        "smalto": train_step(ours_train, lambda x: ours_train(x).logits, cfg, vocab.size, train_dtype),
        "hf_fp32": train_step(hf["fp32"], lambda x: hf["fp32"](x).logits, cfg, vocab.size, torch.float32)}
    hf["fp32"].load_state_dict(hf["same"].state_dict())  # fresh weights again, as float32
    report["train"]["hf_same"] = train_step(hf["fp32"], lambda x: hf["fp32"](x).logits, cfg, vocab.size, train_dtype)
    if not cfg.quick:
        compiled = copy.deepcopy(model).float()
        report["train"]["smalto_compiled"] = train_step(compiled, lambda x: compiled(x).logits, cfg, vocab.size,
                                                        train_dtype, compiled=True)
    t = report["train"]
    progress(f"train step: smalto {t['smalto']:,.0f} tok/s"
             + (f" ({t['smalto_compiled']:,.0f} compiled)" if "smalto_compiled" in t else "")
             + f", transformers {t['hf_fp32']:,.0f} (fp32) / {t['hf_same']:,.0f} ({report['train_dtype']} autocast)")

    report["roofline"] = roofline(model, report, limits, s)
    return report


def roofline(model: Transformer, report: dict, limits: dict, s: dict) -> dict:
    """smalto's figures as fractions of what this machine's FLOP rate and bandwidth allow."""
    bandwidth = limits["bandwidth_gbs"] * 1e9
    name = {"float32": "fp32", "bfloat16": "bf16"}
    dtype, train_dtype = getattr(torch, report["dtype"]), getattr(torch, report["train_dtype"])
    peak = limits[f"matmul_gflops_{name[report['dtype']]}"] * 1e9
    train_peak = limits[f"matmul_gflops_{name[report['train_dtype']]}"] * 1e9
    train = model_costs(model, s["train_len"] // 2, train_dtype)
    limit = train_peak / (3 * train["flops_per_token"])  # forward + backward = 3 forwards
    out = {"train": {"limit_tok_s": limit, "fraction": report["train"]["smalto"] / limit}}
    for batch, figures in report["generate"].items():
        prefill = model_costs(model, s["prompt"] // 2, dtype)
        prefill_limit = peak / prefill["flops_per_token"]
        context = s["prompt"] + s["new"] // 2
        decode = model_costs(model, context, dtype)
        step_seconds = max(batch * decode["flops_per_token"] / peak,
                           (decode["weight_bytes"] + batch * context * decode["kv_bytes_per_token"]) / bandwidth)
        out[f"batch{batch}"] = {
            "prefill_limit_tok_s": prefill_limit, "decode_limit_ms_per_step": 1000 * step_seconds,
            "prefill": figures["smalto"]["prefill_tok_s"] / prefill_limit,
            "decode": step_seconds * 1000 / figures["smalto"]["decode_ms_per_step"]}
    return out


def table(report: dict) -> str:
    rf, rows, same = report["roofline"], [], report["dtype"]
    t = report["train"]
    rows.append((f"training step (tok/s; {report['train_dtype']} autocast)", t["smalto"], t["hf_fp32"], t["hf_same"],
                 rf["train"]["fraction"]))
    for batch, g in report["generate"].items():
        r = rf[f"batch{batch}"]
        for what in ("prefill", "decode"):
            key = f"{what}_tok_s"
            rows.append((f"{what}, batch {batch} (tok/s)", g["smalto"][key], g["hf_fp32"][key], g["hf_same"][key],
                         r[what]))
    lines = [f"| measure | smalto ({same}) | transformers fp32 | transformers {same} | × fp32 | × {same} | "
             f"smalto / roofline |", "|---|---|---|---|---|---|---|"]
    for name, ours, fp32, theirs, fraction in rows:
        lines.append(f"| {name} | {ours:,.0f} | {fp32:,.0f} | {theirs:,.0f} | **{ours / fp32:.2f}×** | "
                     f"**{ours / theirs:.2f}×** | {fraction:.0%} |")
    compiled_rows = []
    if "smalto_compiled" in t:
        c = t["smalto_compiled"]
        compiled_rows.append(f"| training step, compiled (tok/s) | {c:,.0f} | {t['hf_fp32']:,.0f} | "
                             f"{t['hf_same']:,.0f} | **{c / t['hf_fp32']:.2f}×** | **{c / t['hf_same']:.2f}×** | "
                             f"{c / rf['train']['limit_tok_s']:.0%} |")
    for batch, g in report["generate"].items():
        r = rf[f"batch{batch}"]
        if "smalto_compiled" in g:
            c = g["smalto_compiled"]["decode_tok_s"]
            fp32, theirs = g["hf_fp32"]["decode_tok_s"], g["hf_same"]["decode_tok_s"]
            rows_extra = (f"| decode, batch {batch}, compiled (tok/s) | {c:,.0f} | {fp32:,.0f} | "
                          f"{theirs:,.0f} | **{c / fp32:.2f}×** | "
                          f"**{c / theirs:.2f}×** | "
                          f"{r['decode_limit_ms_per_step'] / g['smalto_compiled']['decode_ms_per_step']:.0%} |")
            compiled_rows.append(rows_extra)
    lines += compiled_rows
    for n, seconds in report["draw"].items():
        compiled = report.get("draw_compiled", {}).get(n)
        extra = f" ({compiled:.3f} compiled)" if compiled is not None else ""
        lines.append(f"| draw {n} image{'s' * (int(n) > 1)} with CFG, decoder included (s) | {seconds:.3f}{extra} "
                     f"| | | | | |")
    m = report["machine"]
    lines.append(f"\nmachine: {m['matmul_gflops_fp32']:.0f} GFLOP/s fp32 and {m['matmul_gflops_bf16']:.0f} "
                 f"GFLOP/s bf16 matmul, {m['bandwidth_gbs']:.1f} GB/s memory copy, {m['threads']} threads; "
                 f"model: {report['params'] / 1e6:.2f} M parameters")
    for batch, g in report["generate"].items():
        r = rf[f"batch{batch}"]
        best = min(g[k]["decode_ms_per_step"] for k in ("smalto", "smalto_compiled") if k in g)
        lines.append(f"decode, batch {batch}: {best:.2f} ms per step at best against a roofline of "
                     f"{r['decode_limit_ms_per_step']:.2f} ms ({best / r['decode_limit_ms_per_step']:.1f}× the limit)")
    if "compile_seconds" in report:
        lines.append(f"compiling the decoding step took {report['compile_seconds']:.0f} s (once per process)")
    return "\n".join(lines)
