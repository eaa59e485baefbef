"""Conversations, judged turn by turn by program, each reply decoded after the model's own earlier ones.

- follow-ups: a question naming an object, then questions about it that say only "it";
- a scene given in words, then a question about it;
- the held-out conversation set (`held_out_set`): conversations of greetings, thanks, requests
  outside the world (to talk or to draw), requests to describe the picture, questions and
  follow-ups, in any order, with and without a picture, in phrasings no training conversation
  used (`smalto.data.talk`, split "heldout"), on the scenes of the kind evaluated. Every reply is
  judged by `verify.judges.judge_turn`: "sensible" is the right kind of reply (a caption, the true
  answer, the greeting, the scoped refusal), "correct" also asks the caption to be exact.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from smalto.data.shapes import Sample, ShapesWorld, captions
from smalto.data.talk import HELLO_REPLY, KINDS, OFF_TOPIC_REPLY, PHRASINGS, Turn, conversation, follow_ups
from smalto.eval.common import at_most, chat_replies, pct
from smalto.pipeline import Message, Pipeline
from smalto.verify.judges import judge_answer, judge_turn

CHAT_ROWS = ("first_question", "follow_up", "text_scene", "greeting", "off_topic", "sensible", "correct")


def held_out_set(world: ShapesWorld, n: int) -> list[tuple[Sample, list[Turn]]]:
    """n conversations in held-out phrasings, about scenes 0 .. n-1 of `world` (a third text only)."""
    rng = np.random.default_rng([world.seed, 23])
    samples = [world[i] for i in range(at_most(world, n))]
    return [(s, conversation(rng, s, "heldout")) for s in samples]


def converse(pipe: Pipeline, talks: list[tuple[Sample, list[Turn]]]) -> list[list[str]]:
    """The model's greedy reply to every turn of every conversation, each after its own earlier
    replies, the conversations batched turn by turn."""
    history: list[list[Message]] = [[] for _ in talks]
    replies: list[list[str]] = [[] for _ in talks]
    for turn in range(max(len(turns) for _, turns in talks)):
        live = [k for k, (_, turns) in enumerate(talks) if turn < len(turns)]
        for k in live:
            sample, t = talks[k][0], talks[k][1][turn]
            history[k].append(Message("user", t.text, images=[sample.image] if t.picture else []))
        for k, reply in zip(live, chat_replies(pipe, [history[k] for k in live])):
            history[k].append(Message("assistant", reply))
            replies[k].append(reply)
    return replies


def eval_held_out_set(pipe: Pipeline, world: ShapesWorld, n: int) -> dict:
    """The held-out set's "sensible" and "correct" shares of replies, per kind of turn too, and the
    trivial baseline: every turn answered with the reply most often right."""
    talks = held_out_set(world, n)
    by_kind: dict[str, list[bool]] = defaultdict(list)
    sensible, correct, misses = [], [], []
    for (sample, turns), replies in zip(talks, converse(pipe, talks)):
        for t, reply in zip(turns, replies):
            j = judge_turn(t, reply, sample.scene)
            sensible.append(j.checks["sensible"])
            correct.append(j.checks["exact"])
            by_kind[t.kind].append(j.checks["sensible"])
            misses += j.reasons
    wanted = [t.reply for _, turns in talks for t in turns]
    top = Counter(wanted).most_common(1)[0][0]
    return {"sensible": pct(sensible), "correct": pct(correct),
            "by_kind": {k: pct(by_kind[k]) for k in KINDS if by_kind[k]},
            "baseline": pct([w == top for w in wanted]), "baseline_reply": top,
            "conversations": len(talks), "turns": len(sensible), "misses": misses[:40]}


def eval_conversation(pipe: Pipeline, world: ShapesWorld, n: int) -> dict:
    """Follow-ups (each turn after the model's own previous replies; "follow_up" scores the turns
    that refer back), questions about a scene given in words ("text_scene"), single greetings and
    off-topic requests in held-out phrasings, and the held-out conversation set ("sensible",
    "correct", "held_out")."""
    rng = np.random.default_rng([world.seed, 21])
    samples = [world[i] for i in range(at_most(world, n))]
    talks = [(s, [Turn("follow_up" if k else "question", p["q"], p["a"], picture=k == 0)
                  for k, p in enumerate(follow_ups(s.scene, rng, 3))]) for s in samples]
    talks = [(s, turns) for s, turns in talks if turns]
    first, later = [], []
    for (_, turns), replies in zip(talks, converse(pipe, talks)):
        for k, (t, reply) in enumerate(zip(turns, replies)):
            (first if k == 0 else later).append(judge_answer(reply, t.reply).score == 1.0)
    scene_qa = [(s, s.qa[int(rng.integers(len(s.qa)))], captions(s.scene)[int(rng.integers(3))]) for s in samples]
    said = chat_replies(pipe, [[Message("user", f"{text}. {pair['q']}")] for _, pair, text in scene_qa])
    greet = chat_replies(pipe, [[Message("user", g)] for g in PHRASINGS["greeting"][1]])
    off = chat_replies(pipe, [[Message("user", q)] for q in PHRASINGS["off_topic"][1]])
    held = eval_held_out_set(pipe, world, n)
    return {"first_question": pct(first), "follow_up": pct(later),
            "text_scene": pct([judge_answer(r, p["a"]).score == 1.0 for r, (_, p, _) in zip(said, scene_qa)]),
            "greeting": pct([r == HELLO_REPLY for r in greet]), "off_topic": pct([r == OFF_TOPIC_REPLY for r in off]),
            "sensible": held["sensible"], "correct": held["correct"], "held_out": held}
