"""Conversations as training data and as an evaluation (issues 13, 27): greetings, thanks, requests
outside the world, descriptions, questions and follow-ups in any order, with and without a picture."""

import numpy as np
import pytest

from smalto.data.shapes import Obj, Scene, ShapesConfig, ShapesWorld, parse_caption
from smalto.data.talk import (DRAW_SCOPE_REPLY, NO_PICTURE_REPLY, PHRASINGS, REPLIES, SOCIAL, Turn, conversation,
                              follow_ups)
from smalto.data.tasks import TASKS
from smalto.format import Vocab
from smalto.tokenizers import load_tokenizers
from smalto.training.data import ExampleStream, TaskMix
from smalto.verify.judges import judge_turn
from smalto.verify.spec import parse_prompt, parse_question


@pytest.fixture(scope="module")
def stream():
    tok = load_tokenizers(None)
    return ExampleStream(tok, Vocab.from_tokenizers(tok), "shapes", TaskMix(caption=0, draw=0, qa=0, chat=1), 0,
                         max_len=384)


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


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_conversations_mix_every_kind_in_any_order_from_their_split_only(split):
    world, seen = ShapesWorld(ShapesConfig(), 1), set()
    other = {p for kind in PHRASINGS for p in PHRASINGS[kind][split == "train"]}  # the other split's phrasings
    for i in range(400):
        sample = world[i]
        turns = conversation(np.random.default_rng(i), sample, split)
        assert 1 <= len(turns) <= 6 and sum(t.picture for t in turns) <= 1
        pictured = any(t.picture for t in turns)
        for k, t in enumerate(turns):
            seen.add((t.kind, pictured, k > 0))
            assert t.text not in other, t
            if t.kind in REPLIES:
                assert t.reply == REPLIES[t.kind]
            if t.kind in ("describe", "question", "follow_up"):  # about the picture: it came with this or earlier
                assert pictured and any(x.picture for x in turns[:k + 1]), turns
            if t.kind == "describe":
                assert parse_caption(t.reply) == sample.scene
            if t.kind == "follow_up":
                assert any(x.kind == "question" for x in turns[:k])
            if t.kind == "no_picture":
                assert not pictured
    kinds = {k for k, _, _ in seen}
    assert kinds == {*SOCIAL, "describe", "question", "follow_up", "no_picture"}
    assert {(k, p) for k, p, _ in seen} >= {(k, p) for k in SOCIAL for p in (True, False)}  # with and without
    assert ("describe", True, True) in seen and ("greeting", True, True) in seen  # not only as the first message


def test_held_out_phrasings_are_never_trained():
    for kind, (train, heldout) in PHRASINGS.items():
        assert train and heldout and not set(train) & set(heldout), kind


def test_chat_examples_train_exactly_the_assistant_replies(stream):
    tok, v = stream.tok, stream.vocab
    trained = {p: kind for kind, (train, _) in PHRASINGS.items() for p in train}
    kinds = set()
    for task, e in stream.examples(0, 200):
        assert TASKS[task] == "chat"
        ids = np.array(e.ids)
        starts = [i + 1 for i, t in enumerate(e.ids) if t == v.assistant]
        mask = np.flatnonzero(e.loss_mask)
        expected = [i for s in starts for i in range(s, e.ids.index(v.eos, s) + 1)]
        assert mask.tolist() == expected  # every reply and its <eos>, nothing else
        users = [i + 1 for i, t in enumerate(e.ids) if t == v.user]
        for u, s in zip(users, starts):
            asked = tok.text.decode([t for t in ids[u:s - 1].tolist() if t < v.ranges["image"].start])
            reply = tok.text.decode(ids[s:e.ids.index(v.eos, s)].tolist())
            picture = v.boi in e.ids[:s]
            if (kind := trained.get(asked[:1].lower() + asked[1:])) is not None:  # (sometimes capitalised)
                kinds.add(kind)
                if kind == "describe" and picture:
                    assert parse_caption(reply) is not None, reply
                else:
                    assert reply == REPLIES["no_picture" if kind == "describe" else kind], (asked, reply)
            elif not picture and ". " in asked:  # a scene given in words, then a question
                kinds.add("text scene")
                words, question = asked.rsplit(". ", 1)
                assert reply == parse_question(question).answer(Scene(tuple(sorted(_scene_of(words))))), asked
            elif not picture:
                kinds.add("no picture")
                assert reply == NO_PICTURE_REPLY, (asked, reply)
            else:
                kinds.add("question")
    assert kinds >= {*SOCIAL, "describe", "text scene", "no picture", "question"}


def _scene_of(words: str):
    """The scene a description states: every object with its cell."""
    things = parse_prompt(words).things
    assert all(t.cell is not None and t.shape and t.color and t.size for t in things), words
    return [Obj(*t.cell, t.shape, t.color, t.size) for t in things]


def test_judge_turn_asks_each_kind_for_its_own_reply():
    scene = Scene((Obj(0, 0, "circle", "red", "small"),))
    describe = Turn("describe", "what do you see?", "a small red circle at the top left")
    assert judge_turn(describe, "a small red circle at the top left", scene).checks == {"sensible": True, "exact": True}
    assert judge_turn(describe, "a large blue square at the center", scene).checks == {"sensible": True,
                                                                                       "exact": False}
    assert judge_turn(describe, "yes", scene).score == 0 and not judge_turn(describe, "yes", scene).checks["sensible"]
    outside = Turn("draw_outside", "draw a cat", DRAW_SCOPE_REPLY)
    assert judge_turn(outside, f" {DRAW_SCOPE_REPLY}\n", scene).score == 1
    assert judge_turn(outside, "hi! i describe, answer questions about and draw shapes.", scene).score == 0
    question = Turn("question", "where is the red circle?", "top left")
    assert judge_turn(question, "Top left", scene).score == 1 and judge_turn(question, "center", scene).score == 0


def test_a_folder_record_without_a_scene_or_questions_still_makes_conversations():
    from smalto.data.shapes import Sample

    record = Sample(None, None, ["my cat on the sofa"], [])
    kinds = set()
    for i in range(200):
        for t in conversation(np.random.default_rng(i), record):
            kinds.add(t.kind)
            assert t.kind not in ("question", "follow_up")  # nothing to ask about
            if t.kind == "describe":
                assert t.reply == "my cat on the sofa"
    assert {"describe", "no_picture", "greeting"} <= kinds
