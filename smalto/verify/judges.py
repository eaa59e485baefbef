"""Judges: a model's output against ShapesWorld's ground truth, scored by program.

    judge_caption(text, scene)          a caption must describe exactly the scene
    judge_answer(answer, truth)         an answer must equal the true one
    judge_drawing(image, scene, cfg)    the scene parsed from the pixels must equal the prompt's
    judge_turn(turn, reply, scene)      a conversation's reply must be the one its kind calls for

Each returns a `Judgement`: a score in [0, 1], the named checks behind it, and the reasons for a
miss in words. ShapesEval aggregates the checks; RL rewards and best-of-N read the score; the
same function serves all three, so what is rewarded is what is measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smalto.data.shapes import Obj, Scene, ShapesConfig, parse_caption
from smalto.data.talk import Turn
from smalto.verify.scene import parse_image, scene_diff

ATTRIBUTES = ("color", "shape", "size")


@dataclass(frozen=True)
class Judgement:
    score: float  # in [0, 1]
    checks: dict[str, bool] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)  # empty when the output is right


def judge_caption(text: str, truth: Scene) -> Judgement:
    """Exact scene, object count, and per true object ("color/0", "shape/0", ...) the attributes of
    the object the caption puts in its cell. The score is 1 for an exact caption."""
    got = parse_caption(text) or Scene(())
    checks = {"exact": got == truth, "count": len(got.objects) == len(truth.objects)}
    for i, o in enumerate(truth.objects):
        found = got.at(o.row, o.col)
        for attr in ATTRIBUTES:
            checks[f"{attr}/{i}"] = found is not None and getattr(found, attr) == getattr(o, attr)
    reasons = scene_diff(truth, got) if parse_caption(text) is not None else [f"not a caption: {text!r}"]
    return Judgement(float(checks["exact"]), checks, [] if checks["exact"] else reasons)


def judge_answer(answer: str, truth: str) -> Judgement:
    right = answer.strip().lower() == truth
    return Judgement(float(right), {"exact": right}, [] if right else [f"answered {answer!r}, the answer is {truth!r}"])


def judge_turn(turn: Turn, reply: str, truth: Scene | None) -> Judgement:
    """A reply in a conversation (`smalto.data.talk`) against what its turn calls for. "sensible":
    the right kind of reply: for a request to describe the picture, a caption (a scene description
    that parses); for a question, the true answer; otherwise the stated reply (the greeting, "you're
    welcome", the scoped refusals, "i see no picture"). "exact" also asks a caption to be this
    scene's. The score is 1 for an exact reply."""
    reply = reply.strip()
    if turn.kind == "describe":
        got = parse_caption(reply)
        checks = {"sensible": got is not None, "exact": got is not None and got == truth}
    elif turn.kind in ("question", "follow_up"):
        checks = dict.fromkeys(("sensible", "exact"), judge_answer(reply, turn.reply).score == 1.0)
    else:
        checks = dict.fromkeys(("sensible", "exact"), reply == turn.reply)
    miss = [] if checks["exact"] else [f"{turn.text!r} ({turn.kind}): replied {reply!r}, expected {turn.reply!r}"]
    return Judgement(float(checks["exact"]), checks, miss)


def _single(scene: Scene) -> Obj | None:
    return scene.objects[0] if len(scene.objects) == 1 else None


def judge_drawing(image: np.ndarray, truth: Scene, cfg: ShapesConfig) -> Judgement:
    """The scene the verifier reads from the pixels against the one the prompt described.

    Checks (GenEval-like categories): exact scene, counting (as many recognisable objects), and for
    one object its colour and position, for two its (colour, shape) binding."""
    got = parse_image(image, cfg)
    checks = {"exact": got == truth,
              "counting": len(got.objects) == len(truth.objects) and all(o.shape != "unknown" for o in got.objects)}
    if len(truth.objects) == 1:
        drawn = _single(got)
        checks["colors"] = drawn is not None and drawn.color == truth.objects[0].color
        checks["position"] = drawn is not None and drawn.position == truth.objects[0].position
    if len(truth.objects) == 2:
        checks["attribute_binding"] = sorted((o.color, o.shape) for o in got.objects) == \
            sorted((o.color, o.shape) for o in truth.objects)
    return Judgement(float(checks["exact"]), checks, scene_diff(truth, got))
