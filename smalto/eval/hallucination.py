"""ShapesEval's hallucination probe: does the model report objects that are not in the picture?

- POPE-style (Li et al. 2023): "is there a {colour} {shape}?" about every scene twice, once for an
  object it has (yes) and once for one it lacks (no), so the truth is balanced. The absent object
  is drawn three ways: *random* (any pair the scene lacks; for training scenes never a held-out
  pair, as no training text names one), *popular* (the pairs most frequent in a sample of the
  training stream; ShapesWorld draws pairs uniformly, so this is close to random here, but not for
  a skewed folder of data), *adversarial* (a near miss: a present shape in another colour, or a
  present colour on another shape). Accuracy, precision, recall and
  F1 of "yes", and the yes-ratio (the share of yes, 50 % for an unbiased model: one that says yes
  to everything has recall 100 and F1 67, and the yes-ratio shows why);
- CHAIR-style (Rohrbach et al. 2018) on captions: of the (colour, shape) objects a caption
  mentions, the share the scene lacks (CHAIR_i), and the share of captions with at least one
  (CHAIR_s);
- text-primed (the "banana" case): the conversation names an absent object before the model looks,
  "look for the red triangle." then the picture alone (a caption request), or asks a question that
  presumes it ("next to the red triangle, what else is there?"); the share of replies that name it
  as if it were there (against how often unprimed captions of the same pictures name it), and of
  those that say "there is no red triangle".

False premises ("what color is the square?" without a square) are ShapesEval's premises section.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

import numpy as np

from smalto.data.shapes import ShapesConfig, ShapesWorld
from smalto.eval.common import at_most, batches, chat_replies, pct
from smalto.pipeline import Message, Pipeline

SETTINGS = ("random", "popular", "adversarial")
POPULAR = 6  # how many of the most frequent training pairs "popular" draws from
# The summary table's rows: each headline number (`flat`'s keys) and its label.
ROWS = {**{f"pope_{s}_f1": f"POPE {s} F1" for s in SETTINGS},
        **{f"pope_{s}_yes": f"POPE {s} yes-ratio" for s in SETTINGS},
        "chair_i": "CHAIR_i (lower is better)", "chair_s": "CHAIR_s (lower is better)",
        "primed_caption": "names a primed absent object: caption",
        "unprimed_caption": "... the same object, unprimed caption",
        "primed_question": "names a primed absent object: question",
        "primed_refuted": "refutes a presumed absent object"}


def mentions(text: str, cfg: ShapesConfig) -> list[tuple[str, str]]:
    """The (colour, shape) objects a text names, in order ("a small red circle" -> ("red", "circle"))."""
    pattern = rf"\b({'|'.join(cfg.colors)}) ({'|'.join(cfg.shapes)})s?\b"
    return re.findall(pattern, text.lower())


@lru_cache(maxsize=8)
def popular_pairs(cfg: ShapesConfig, n: int = 2000) -> tuple[tuple[str, str], ...]:
    """Pairs by how often they appear in the first `n` scenes of the training stream (seed 0)."""
    world = ShapesWorld(cfg, 0, "train")
    counts = Counter((o.color, o.shape) for i in range(n) for o in world.scene(i).objects)
    return tuple(p for p, _ in counts.most_common())


def negative(scene, cfg: ShapesConfig, split: str, setting: str, rng: np.random.Generator) -> tuple[str, str]:
    """An object the scene lacks, drawn the setting's way. Questions about training scenes never
    name a held-out pair (no training text does); about held-out scenes, any pair."""
    present = {(o.color, o.shape) for o in scene.objects}
    allowed = [p for p in cfg.pairs("train" if split == "train" else "all") if p not in present]
    if setting == "popular":
        top = [p for p in popular_pairs(cfg) if p in allowed][:POPULAR]
        allowed = top or allowed
    elif setting == "adversarial":
        near = sorted({(c, o.shape) for o in scene.objects for c in cfg.colors}
                      | {(o.color, s) for o in scene.objects for s in cfg.shapes})
        allowed = [p for p in near if p in allowed] or allowed
    elif setting != "random":
        raise ValueError(f"unknown setting {setting!r} (known: {', '.join(SETTINGS)})")
    return allowed[rng.integers(len(allowed))]


def pope_items(world: ShapesWorld, n: int, setting: str) -> list[tuple[np.ndarray, str, str]]:
    """(image, question, "yes"/"no") for `n` scenes: one question about an object each has, one
    about one it lacks."""
    items = []
    for i in range(n):
        s, rng = world[i], np.random.default_rng([world.seed, 5, SETTINGS.index(setting), i])
        o = s.scene.objects[rng.integers(len(s.scene.objects))]
        c, shape = negative(s.scene, world.cfg, world.split, setting, rng)
        items += [(s.image, f"is there a {o.color} {o.shape}?", "yes"), (s.image, f"is there a {c} {shape}?", "no")]
    return items


def pope_scores(replies: list[str], truth: list[str]) -> dict:
    """Accuracy, precision, recall and F1 of "yes", the yes-ratio, and replies neither yes nor no."""
    said = [r.strip().lower() for r in replies]
    yes = [r == "yes" for r in said]
    true_yes = [t == "yes" for t in truth]
    tp = sum(a and b for a, b in zip(yes, true_yes))
    precision = tp / max(1, sum(yes))
    recall = tp / max(1, sum(true_yes))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": pct([r == t for r, t in zip(said, truth)]), "precision": round(100 * precision, 1),
            "recall": round(100 * recall, 1), "f1": round(100 * f1, 1), "yes_ratio": pct(yes),
            "other": pct([r not in ("yes", "no") for r in said])}


def chair(captions: list[str], scenes: list, cfg: ShapesConfig) -> dict:
    """CHAIR_i (mentioned objects the scene lacks / all mentioned) and CHAIR_s (captions with one)."""
    wrong, total, flagged = 0, 0, []
    for text, scene in zip(captions, scenes):
        present = {(o.color, o.shape) for o in scene.objects}
        named = mentions(text, cfg)
        bad = sum(p not in present for p in named)
        wrong, total = wrong + bad, total + len(named)
        flagged.append(bad > 0)
    return {"chair_i": round(100.0 * wrong / max(1, total), 1), "chair_s": pct(flagged), "mentions": total}


def _replies(pipe: Pipeline, images: list, questions: list[str], effort: str = "none") -> list:
    return [r for chunk in batches(list(zip(images, questions)))
            for r in pipe.reply_batch([im for im, _ in chunk], [q for _, q in chunk], effort)]


def eval_pope(pipe: Pipeline, world: ShapesWorld, n: int, effort: str = "none") -> dict:
    """POPE's three settings on `n` scenes (2n questions each), answered at a test-time effort level;
    above "none", also as the model itself answered ("pope_<setting>_model") where the solver
    answered for it. Always saying "yes" scores F1 66.7 at yes-ratio 100."""
    report, n = {}, at_most(world, n)
    for setting in SETTINGS:
        items = pope_items(world, n, setting)
        replies = _replies(pipe, [im for im, _, _ in items], [q for _, q, _ in items], effort)
        truth = [a for _, _, a in items]
        report[f"pope_{setting}"] = pope_scores([r.text for r in replies], truth)
        if effort != "none":
            report[f"pope_{setting}_model"] = pope_scores([r.own for r in replies], truth)
    return report


def eval_hallucination(pipe: Pipeline, world: ShapesWorld, n: int) -> dict:
    """The probe on `n` scenes of `world` (each setting asks 2n questions)."""
    n = at_most(world, n)
    report = eval_pope(pipe, world, n)
    samples = [world[i] for i in range(n)]
    texts = [t for chunk in batches(samples) for t in pipe.caption_batch([s.image for s in chunk])]
    report["chair"] = chair(texts, [s.scene for s in samples], world.cfg)

    absent = [negative(s.scene, world.cfg, world.split, "random", np.random.default_rng([world.seed, 6, i]))
              for i, s in enumerate(samples)]
    names = [f"{c} {shape}" for c, shape in absent]
    hinted = chat_replies(pipe, [[Message("user", f"look for the {x}."), Message("user", images=[s.image])]
                                 for x, s in zip(names, samples)])
    asked = [r.text for r in _replies(pipe, [s.image for s in samples],
                                      [f"next to the {x}, what else is there?" for x in names])]
    refuted = [r.strip().lower().startswith(f"there is no {x}") for r, x in zip(asked, names)]
    report["primed"] = {
        "primed_caption": pct([p in mentions(r, world.cfg) for r, p in zip(hinted, absent)]),
        "unprimed_caption": pct([p in mentions(r, world.cfg) for r, p in zip(texts, absent)]),
        "primed_question": pct([not no and p in mentions(r, world.cfg) for r, p, no in zip(asked, absent, refuted)]),
        "primed_refuted": pct(refuted)}
    return report


def flat(section: dict) -> dict:
    """The headline numbers of a section, keyed as `ROWS`."""
    out = {f"pope_{s}_{k}": section[f"pope_{s}"][m] for s in SETTINGS for k, m in (("f1", "f1"), ("yes", "yes_ratio"))}
    return {**out, "chair_i": section["chair"]["chair_i"], "chair_s": section["chair"]["chair_s"], **section["primed"]}
