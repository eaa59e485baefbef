"""`smalto rl`: reinforcement learning from verifiable rewards (GRPO), with the checker as the reward.

Each step draws `prompts` ShapesWorld prompts and samples a group of `group` completions for each
from the current policy (one batch through the engine). A program scores every completion:

    draw   the prompt (any of a scene's phrasings) is parsed into constraints (`verify.spec`); the
           drawing earns the share of them its parsed pixels satisfy (`verify.smt.check`), 1.0 when
           all hold
    qa     an answer earns 1 when it is exactly the true one, else 0 (no <eos> in time: 0)

A completion's advantage is its reward minus its group's mean (Dr. GRPO: no division by the
group's spread, which would inflate the noise of groups that almost agree), so advantages sum to
zero in every group and a group whose samples all score alike teaches nothing. The loss is PPO's
clipped ratio of new to old token probabilities times the advantage, averaged over each
completion's tokens and then over completions (a drawing has 65 tokens, an answer two: tasks
count alike), plus an optional KL penalty to the starting model (the k3 estimator). With
`epochs=1` (the default) the ratio is 1 and the update is on-policy REINFORCE with a group
baseline, as nanochat's. Drawings always have the same length, so there is no "truncated earns 0"
rule that could zero every reward; an answer that runs past its limit simply is not exact.

Probabilities are the policy's own: log-softmax over the tokens the format allows at each step
of the logits divided by the rollouts' `temperature` (the distribution actually sampled),
recomputed with gradients by replaying the format over the sampled tokens. Rollouts sample the
conditional stream (no guidance: guided samples would come from a different distribution than
the one being trained).

The run directory is a checkpoint like `smalto train`'s (any command loads it), resumable
(`--resume`), with log.jsonl (rewards per step, ShapesEval probes) and reward.png.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch
from smalto.progress import bar as progress_bar, write as progress_write

from smalto import atomic, precision
from smalto.checkpoint import load_checkpoint, load_optimizer, read_meta, save_checkpoint
from smalto.data.shapes import ShapesConfig, ShapesWorld, captions, world_config
from smalto.errors import SmaltoError
from smalto.format import DRAWING, Allowed, FormatState, Vocab, answer_prompt, draw_prompt, positions
from smalto.inference import Engine, Sampling
from smalto.inference.detok import detokenize
from smalto.model import Transformer
from smalto.options import SAMPLING, Range
from smalto.paths import inside
from smalto.plots import loss_curve
from smalto.tokenizers import Tokenizers
from smalto.verify.judges import judge_answer

RL_TASKS = ("draw", "qa")
MAX_ANSWER_TOKENS = 16  # ShapesWorld's longest answer ("there is no small purple triangle") is 9
COUNT = Range(1, integer=True)


@dataclass
class RLConfig:
    init_from: str | None = None  # the starting model (None: the shipped default)
    tasks: tuple[str, ...] = ("draw",)  # what prompts ask for, in turn: drawings and/or answers
    split: str = "train"  # the ShapesWorld compositions prompts come from ("heldout": never seen drawn)
    min_objects: int = 1  # fewest objects in a prompt's scene (2: only what one-object prompts do not teach)
    steps: int = 200
    prompts: int = 8  # prompts per step
    group: int = 8  # completions sampled per prompt
    lr: float = 2e-5
    temperature: float = 1.0  # of the rollouts
    clip: float = 0.2  # PPO's ratio clip (matters with epochs > 1)
    kl: float = 0.0  # weight of the KL penalty to the starting model
    epochs: int = 1  # updates per batch of rollouts (1: on-policy)
    grad_clip: float = 1.0
    seed: int = 0  # of the prompts and of the sampling
    log_every: int = 1
    eval_every: int = 50  # a ShapesEval probe every this many steps (0: never)
    save_every: int = 50
    precision: str = "auto"

    RANGES: ClassVar[dict[str, Range]] = {
        "steps": COUNT, "prompts": COUNT, "group": Range(2, integer=True), "lr": Range(0, low_open=True),
        "temperature": Range(0, 10, low_open=True), "clip": Range(0, 1, low_open=True), "kl": Range(0),
        "min_objects": Range(1, 3, integer=True), "epochs": COUNT, "grad_clip": Range(0, low_open=True),
        "seed": SAMPLING["seed"], "log_every": COUNT, "eval_every": Range(0, integer=True), "save_every": COUNT}
    MAY_CHANGE: ClassVar[tuple[str, ...]] = ("steps",)

    def __post_init__(self) -> None:
        for name, valid in self.RANGES.items():
            valid.check(getattr(self, name), name)
        self.tasks = (self.tasks,) if isinstance(self.tasks, str) else tuple(self.tasks)
        if not self.tasks or not set(self.tasks) <= set(RL_TASKS):
            raise SmaltoError(f"tasks must be some of {', '.join(RL_TASKS)}, got {list(self.tasks)!r}")
        if self.split not in ShapesWorld.SPLITS:
            raise SmaltoError(f"split must be one of {', '.join(ShapesWorld.SPLITS)}, got {self.split!r}")
        if self.precision not in ("auto", *precision.DTYPES):
            raise SmaltoError(f"precision must be auto, {' or '.join(precision.DTYPES)}, got {self.precision!r}")
        self.init_from = None if self.init_from is None else str(self.init_from)


@dataclass
class Rollouts:
    """One task's completions for a step: `group` consecutive rows per prompt."""
    task: str
    prompts: list[list[int]]
    tokens: list[list[int]]
    rewards: np.ndarray  # [rows]
    allowed: Allowed = field(default_factory=Allowed)
    images: list[np.ndarray] = field(default_factory=list)  # drawings only


def advantages(rewards: np.ndarray, group: int) -> np.ndarray:
    """Reward minus its group's mean: zero-sum in every group of `group` consecutive rows."""
    r = np.asarray(rewards, np.float64).reshape(-1, group)
    return (r - r.mean(1, keepdims=True)).reshape(-1)


def draw_reward(prompt: str, image: np.ndarray, world: ShapesConfig) -> float:
    """The share of the prompt's constraints the drawing's parsed pixels satisfy."""
    from smalto.verify.scene import parse_image
    from smalto.verify.smt import check
    from smalto.verify.spec import parse_prompt

    return check(parse_prompt(prompt), parse_image(image, world)).score


def sample_tasks(cfg: RLConfig, world: ShapesWorld, step: int) -> dict[str, list[tuple]]:
    """This step's prompts per task, a pure function of (seed, step): a resumed run rolls out what
    an uninterrupted one would have. draw: (prompt text,); qa: (image, question, answer)."""
    rng = np.random.default_rng([cfg.seed, 13, step])
    out: dict[str, list[tuple]] = {t: [] for t in cfg.tasks}
    for k in range(cfg.prompts):
        sample = world[step * cfg.prompts + k]
        task = cfg.tasks[k % len(cfg.tasks)]
        if task == "draw":
            out[task].append((captions(sample.scene)[int(rng.integers(4))],))
        else:
            pair = sample.qa[int(rng.integers(len(sample.qa)))]
            out[task].append((sample.image, pair["q"], pair["a"]))
    return {t: items for t, items in out.items() if items}


def rollout(engine: Engine, tokenizers: Tokenizers, task: str, items: list[tuple], cfg: RLConfig, seed: int,
            world: ShapesConfig) -> Rollouts:
    """Sample `cfg.group` completions per item and score them."""
    v, g = engine.vocab, cfg.group
    sampling = Sampling(temperature=cfg.temperature, seed=seed)
    if task == "draw":
        prompts = [draw_prompt(v, tokenizers.text.encode(text)) for (text,) in items for _ in range(g)]
        drawn = v.drawn("image")
        body = v.modalities[drawn].tokens
        rows = engine.generate(prompts, body + 1, sampling, DRAWING)
        codes = torch.stack([v.item_codes(r.tokens[:body], drawn) for r in rows]).view(-1, *v.image.grid)
        images = list(tokenizers.image.decode(codes))
        rewards = [draw_reward(items[i // g][0], im, world) for i, im in enumerate(images)]
        return Rollouts(task, prompts, [r.tokens for r in rows], np.array(rewards), DRAWING, images)
    codes = tokenizers.image.encode(np.stack([image for image, _, _ in items]))
    prompts = [answer_prompt(v, c, tokenizers.text.encode(q)) for c, (_, q, _) in zip(codes, items) for _ in range(g)]
    rows = engine.generate(prompts, MAX_ANSWER_TOKENS, sampling, Allowed())
    rewards = [judge_answer(detokenize(tokenizers.text, r.tokens, v.eos), items[i // g][2]).score
               if r.tokens and r.tokens[-1] == v.eos else 0.0 for i, r in enumerate(rows)]
    return Rollouts(task, prompts, [r.tokens for r in rows], np.array(rewards), Allowed())


def token_logprobs(model: Transformer, v: Vocab, prompts: list[list[int]], tokens: list[list[int]],
                   allowed: Allowed, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(token | prefix) of each completion token under the format's mask and the sampling
    temperature (at 1.0, what the engine reports while sampling); ([rows, longest completion], its
    validity mask)."""
    device = model.embed.weight.device
    n, width = len(prompts), max(len(t) for t in tokens)
    full = [p + t for p, t in zip(prompts, tokens)]
    length = max(len(f) for f in full)
    ids = torch.full((n, length), v.pad, dtype=torch.long)
    where = torch.zeros(n, 3, length, dtype=torch.long)
    for i, f in enumerate(full):
        ids[i, :len(f)] = torch.tensor(f)
        where[i, :, :len(f)] = positions(v, f)
    taken = torch.full((n, width), v.pad, dtype=torch.long)
    valid = torch.zeros(n, width, dtype=torch.bool)
    for i, t in enumerate(tokens):
        taken[i, :len(t)] = torch.tensor(t)
        valid[i, :len(t)] = True
    # The legal ids at each completion step: the format replayed over the sampled tokens.
    state, legal = FormatState(v, prompts, allowed), []
    for t in range(width):
        legal.append(state.mask().clone())
        state.advance(taken[:, t])
    legal = torch.stack(legal, 1).to(device)  # [n, width, V]
    # Logits that predict completion token t of row i sit at position len(prompt_i) - 1 + t.
    at = (torch.tensor([len(p) - 1 for p in prompts])[:, None] + torch.arange(width)).clamp_max(length - 2)
    logits = model(ids[:, :-1].to(device), where[:, :, :-1].to(device)).logits
    logits = logits.gather(1, at.to(device)[..., None].expand(-1, -1, logits.shape[-1])).float()
    logp = (logits / temperature).masked_fill(~legal, float("-inf")).log_softmax(-1)
    logp = logp.gather(-1, taken.clamp_max(v.size - 1).to(device)[..., None]).squeeze(-1)
    return logp.masked_fill(~valid.to(device), 0.0), valid.to(device)


def policy_loss(logp: torch.Tensor, old: torch.Tensor, valid: torch.Tensor, adv: torch.Tensor, clip: float,
                kl: float = 0.0, ref: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO's clipped objective (negated, to minimise), each completion's tokens averaged, then the
    completions; with `ref`, plus kl × the k3 estimate of KL(policy || reference)."""
    ratio = (logp - old).exp()
    per_token = -torch.min(ratio * adv[:, None], ratio.clamp(1 - clip, 1 + clip) * adv[:, None])
    stats = {"clipped": float(((ratio - 1).abs() > clip)[valid].float().mean())}
    if ref is not None:
        delta = ref - logp
        k3 = delta.exp() - delta - 1
        per_token = per_token + kl * k3
        stats["kl"] = float(k3[valid].mean())
    per_row = (per_token * valid).sum(1) / valid.sum(1).clamp_min(1)
    return per_row.mean(), stats


def train_rl(out: str | Path, cfg: RLConfig, resume: bool = False, progress: bool = True,
             evaluate: Callable[[Transformer, Vocab, Tokenizers, dict, str], dict] | None = None) -> list[dict]:
    """Run (or resume) GRPO in `out`; returns the log. `evaluate(model, vocab, tokenizers, draw
    defaults, split)` scores the policy every `eval_every` steps (`smalto rl` passes ShapesEval's
    `probe`)."""
    from smalto.pipeline import DEFAULT_MODEL

    out = Path(out)
    base = Path(cfg.init_from) if cfg.init_from is not None else DEFAULT_MODEL
    if resume:
        meta = read_meta(out)
        try:
            then = RLConfig(**meta["rl"])
        except (KeyError, TypeError) as e:
            raise SmaltoError(f"{out / 'meta.json'}: no RL config to resume from ({e})") from None
        if changed := [k for k, x in asdict(then).items() if k not in RLConfig.MAY_CHANGE and x != getattr(cfg, k)]:
            name = changed[0]
            raise SmaltoError(f"{out}: was trained with a different config ({name} {getattr(then, name)!r}, "
                              f"not {getattr(cfg, name)!r}); only steps may change")
        model, vocab, tokenizers, meta = load_checkpoint(out)
        start = meta["step"]
        log = [json.loads(line) for line in inside(out, "log.jsonl", "file").read_text().splitlines() if line]
        log = [r for r in log if r["step"] < start]
    else:
        atomic.recover(out)
        if out.exists() and any(out.iterdir()):
            raise SmaltoError(f"{out}: already exists; pass --resume to continue it or choose another --out")
        model, vocab, tokenizers, meta = load_checkpoint(
            base, "tokens", "RL's rollouts and their log-probabilities are written with pictures' codes")
        start, log = 0, []
    shapes = world_config(meta.get("train", {}).get("data", "shapes"), tokenizers.image.cfg.image_size)
    if shapes is None:
        raise SmaltoError(f"{base}: RL's rewards check ShapesWorld prompts; this model was trained on a folder")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    reference = copy.deepcopy(load_checkpoint(base)[0]).to(device) if cfg.kl > 0 else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    if resume:
        load_optimizer(out, opt)
    bf16 = precision.resolve(cfg.precision, device) == torch.bfloat16
    # Rollouts decode with a copy in the inference dtype, refreshed after every update.
    actor = copy.deepcopy(model).to(torch.bfloat16 if bf16 else torch.float32).eval()
    engine = Engine(actor, vocab)
    world = ShapesWorld(replace(shapes, min_objects=cfg.min_objects), cfg.seed, cfg.split)
    # (the base's streams: its unseen scenes stay unseen, as RL's prompts come from the train split)
    kept = {k: meta[k] for k in ("train", "capabilities", "draw", "streams") if k in meta}
    files: dict[str, bytes] = {}

    def checkpoint(step: int) -> None:
        files["log.jsonl"] = "".join(json.dumps(r) + "\n" for r in log).encode()
        files["reward.png"] = loss_curve([r for r in log if "reward" in r],
                                         ["reward", *(f"reward_{t}" for t in cfg.tasks)], "mean reward")
        if evals := [r | r["eval"] for r in log if "eval" in r]:
            files["eval.png"] = loss_curve(evals, [k for k in evals[-1]["eval"]], "ShapesEval probe (%)")
        save_checkpoint(out, model, vocab, tokenizers, opt, files=files,
                        extra=kept | {"step": step, "rl": asdict(cfg), "rl_from": str(base)})

    if start == 0 and evaluate and cfg.eval_every:
        log.append({"step": 0, "eval": evaluate(model.eval(), vocab, tokenizers, meta.get("draw", {}), cfg.split)})
    bar = progress_bar(range(start, cfg.steps), desc="rl", initial=start, total=cfg.steps, enabled=progress,
                       unit="step")
    began = time.perf_counter() - next((r["seconds"] for r in reversed(log) if "seconds" in r), 0.0)
    for step in bar:
        tick = time.perf_counter()
        actor.load_state_dict(model.state_dict())
        batches = [rollout(engine, tokenizers, task, items, cfg, cfg.seed * 1_000_003 + step * 17 + i, world.cfg)
                   for i, (task, items) in enumerate(sample_tasks(cfg, world, step).items())]
        rolled = time.perf_counter() - tick
        model.train()
        olds, stats = [None] * len(batches), {}
        for epoch in range(cfg.epochs):
            rows = sum(len(b.prompts) for b in batches)
            for i, b in enumerate(batches):
                adv = torch.tensor(advantages(b.rewards, cfg.group), dtype=torch.float32, device=device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logp, valid = token_logprobs(model, vocab, b.prompts, b.tokens, b.allowed, cfg.temperature)
                    ref = None
                    if reference is not None:
                        with torch.no_grad():
                            ref = token_logprobs(reference, vocab, b.prompts, b.tokens, b.allowed, cfg.temperature)[0]
                if olds[i] is None:
                    olds[i] = logp.detach()
                loss, extra = policy_loss(logp, olds[i], valid, adv, cfg.clip, cfg.kl, ref)
                (loss * len(b.prompts) / rows).backward()  # the mean over every completion of the step
                stats |= {f"{k}_{b.task}": v for k, v in extra.items()}
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        model.eval()
        done = step + 1
        rewards = np.concatenate([b.rewards for b in batches])
        groups = np.concatenate([b.rewards.reshape(-1, cfg.group) for b in batches])
        row = {"step": step, "reward": float(rewards.mean()),
               **{f"reward_{b.task}": float(b.rewards.mean()) for b in batches},
               "flat_groups": float(np.mean(np.ptp(groups, 1) == 0)),  # all alike: no advantage, no signal
               **stats, "rollout_s": rolled, "step_s": time.perf_counter() - tick,
               "seconds": time.perf_counter() - began}
        if step % cfg.log_every == 0 or done == cfg.steps:
            log.append(row)
        bar.set_postfix(reward=f"{row['reward']:.3f}")
        if evaluate and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
            log.append({"step": done, "eval": evaluate(model, vocab, tokenizers, meta.get("draw", {}), cfg.split),
                        "seconds": time.perf_counter() - began})
            if progress:
                progress_write(f"step {done}: {log[-1]['eval']}")
        if done % cfg.save_every == 0 or done == cfg.steps:
            checkpoint(done)
    return log
