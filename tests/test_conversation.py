"""Conversations as training data (issue 13): follow-ups that refer back, scenes given in words,
and honest replies to what is not about shapes."""

import numpy as np
import pytest

from smalto.data.shapes import (GREETINGS, HELLO_REPLY, OFF_TOPIC, OFF_TOPIC_REPLY, EVAL_GREETINGS, EVAL_OFF_TOPIC,
                                Obj, Scene, ShapesConfig, ShapesWorld, follow_ups)
from smalto.format import Vocab
from smalto.tokenizers import load_tokenizers
from smalto.data.tasks import TASKS
from smalto.training.data import ExampleStream, TaskMix
from smalto.verify.spec import parse_prompt, parse_question


@pytest.fixture(scope="module")
def stream():
    tok = load_tokenizers(None)
    return ExampleStream(tok, Vocab.from_tokenizers(tok), "shapes", TaskMix(caption=0, draw=0, qa=0, chat=1), 0)


def test_follow_ups_name_an_object_then_refer_back_to_it():
    world = ShapesWorld(ShapesConfig(), 3)
    for i in range(200):
        scene = world.scene(i)
        pairs = follow_ups(scene, np.random.default_rng(i), 3)
        if not pairs:  # no object is the only one of its colour and shape
            assert all(scene.count(o.shape, o.color) > 1 for o in scene.objects)
            continue
        named = parse_question(pairs[0]["q"]).subject
        o = next(o for o in scene.objects if (o.color, o.shape) == (named.color, named.shape))
        assert pairs[0]["a"] in ("yes", o.position)
        for pair in pairs[1:]:
            assert " it?" in pair["q"] or "that one" in pair["q"]
            assert pair["a"] in (o.position, o.size)
        assert len({p["a"] for p in pairs[1:]}) == len(pairs) - 1  # no attribute asked twice
    twins = Scene((Obj(0, 0, "circle", "red", "small"), Obj(2, 2, "circle", "red", "large")))
    assert follow_ups(twins, np.random.default_rng(0)) == []  # "the red circle" would not say which


def test_chat_examples_train_exactly_the_assistant_replies(stream):
    tok, v = stream.tok, stream.vocab
    kinds = set()
    for task, e in stream.examples(0, 120):
        assert TASKS[task] == "chat"
        ids = np.array(e.ids)
        starts = [i + 1 for i, t in enumerate(e.ids) if t == v.assistant]
        trained = np.flatnonzero(e.loss_mask)
        expected = [i for s in starts for i in range(s, e.ids.index(v.eos, s) + 1)]
        assert trained.tolist() == expected  # every reply and its <eos>, nothing else
        text = tok.text.decode([t for t in e.ids if t < v.ranges["image"].start and t not in v.specials.values()])
        replies = [tok.text.decode(ids[s:e.ids.index(v.eos, s)].tolist()) for s in starts]
        if HELLO_REPLY in replies or OFF_TOPIC_REPLY in replies:
            kinds.add("social")
            asked = tok.text.decode(ids[2:starts[0] - 1].tolist())
            assert asked in GREETINGS + OFF_TOPIC
            assert replies[0] == (HELLO_REPLY if asked in GREETINGS else OFF_TOPIC_REPLY)
        elif v.boi not in e.ids:
            kinds.add("text scene")
            said = tok.text.decode(ids[2:starts[0] - 1].tolist())
            words, question = said.rsplit(". ", 1)
            scene = Scene(tuple(sorted((o for o in _scene_of(words)))))
            assert replies[0] == parse_question(question).answer(scene), said
        else:
            kinds.add("picture")
        assert len(text) > 0
    assert kinds == {"social", "text scene", "picture"}


def _scene_of(words: str):
    """The scene a description states: every object with its cell."""
    things = parse_prompt(words).things
    assert all(t.cell is not None and t.shape and t.color and t.size for t in things), words
    return [Obj(*t.cell, t.shape, t.color, t.size) for t in things]


def test_evaluation_phrasings_are_not_training_phrasings():
    assert not set(EVAL_GREETINGS) & set(GREETINGS) and not set(EVAL_OFF_TOPIC) & set(OFF_TOPIC)
