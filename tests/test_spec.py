"""Language -> constraints (`verify.spec`) and the z3 checker and planner (`verify.smt`)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from smalto.data.shapes import GRID, Obj, Scene, ShapesConfig, ShapesWorld, captions, premise_question
from smalto.verify.smt import MAX_OBJECTS, Contradiction, absolute, check, plan
from smalto.verify.spec import Relation, Spec, SpecError, Thing, holds, parse_prompt, parse_question

WORLDS = [ShapesWorld(ShapesConfig(max_objects=4), seed, split) for seed, split in ((1, "train"), (2, "heldout"))]
SAMPLES = [w[i] for w in WORLDS for i in range(60)]


def test_every_caption_template_parses_to_a_spec_its_scene_satisfies():
    for s in SAMPLES:
        for k, text in enumerate(s.captions):
            spec = parse_prompt(text)
            assert check(spec, s.scene).satisfied, (text, check(spec, s.scene))
            if k < 3:  # positional, counted and located captions say everything: planning gives the scene back
                assert plan(spec) == s.scene, text


def test_every_question_template_parses_and_its_answer_is_the_worlds():
    for w in WORLDS:
        for i in range(60):
            s = w[i]
            pairs = s.qa + [premise_question(s.scene, w.cfg, np.random.default_rng(i), w.split) for _ in range(3)]
            for qa in pairs:
                assert parse_question(qa["q"]).answer(s.scene) == qa["a"], (qa, s.captions[0])


@pytest.mark.parametrize("text, words", [
    ("a purple banana left of a cat", ["'banana'", "'cat'"]),
    ("draw me a red circle please", ["'draw'", "'me'", "'please'"]),
    ("how many elephants are there?", ["'elephants'"]),
])
def test_words_outside_the_grammar_are_named(text, words):
    reader = parse_question if text.startswith("how") else parse_prompt
    with pytest.raises(SpecError) as e:
        reader(text)
    assert all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize("text", ["a red", "a red circle at the", "a red circle blue square", "what is this",
                                  "a red blue circle", "left of a square"])
def test_known_words_in_an_unknown_order_are_refused_with_where(text):
    with pytest.raises(SpecError) as e:
        parse_question(text) if text.startswith("what") else parse_prompt(text)
    assert text.split()[0] in str(e.value) or "could not read" in str(e.value)


def test_the_phrasings_people_type_read_as_the_worlds():
    spec = parse_prompt("two red circles and a blue square to the left of the red circle at the top left")
    assert [t.color for t in spec.things] == ["red", "red", "blue"] and spec.relations[0].kind == "left of"
    ref = parse_prompt("a circle left of a square and the square left of the circle")
    assert len(ref.things) == 2 and [(r.a, r.b) for r in ref.relations] == [(0, 1), (1, 0)]
    assert parse_question("What colour is the square?") == parse_question("what color is the square")
    assert parse_prompt("three objects: a red circle").count == 3


def _corruptions(scene: Scene, cfg: ShapesConfig):
    """Every scene that differs from `scene` in one attribute of one object."""
    for k, o in enumerate(scene.objects):
        for attr, values in (("shape", cfg.shapes), ("color", cfg.colors), ("size", cfg.size_names)):
            for value in values:
                if value != getattr(o, attr):
                    changed = Obj(**{**o.__dict__, attr: value})
                    yield o, Scene(scene.objects[:k] + (changed,) + scene.objects[k + 1:])
        for r, c in itertools.product(range(GRID), range(GRID)):
            if scene.at(r, c) is None:
                yield o, Scene(scene.objects[:k] + (Obj(r, c, o.shape, o.color, o.size),) + scene.objects[k + 1:])


def test_the_solver_accepts_the_truth_and_rejects_each_single_attribute_corruption():
    cfg = WORLDS[0].cfg
    for s in SAMPLES[:25]:
        spec = parse_prompt(s.captions[0])
        assert check(spec, s.scene).satisfied
        for obj, corrupted in _corruptions(s.scene, cfg):
            verdict = check(spec, corrupted)
            assert not verdict.satisfied and verdict.failed and verdict.score < 1, (s.captions[0], corrupted)
        # a missing and an extra object are refused too, with the count named
        if len(s.scene.objects) > 1:
            assert "wanted" in " ".join(check(spec, Scene(s.scene.objects[1:])).failed)


def test_a_verdict_names_the_failing_relation():
    spec = parse_prompt("a small red circle left of a large blue square")
    right = Scene((Obj(0, 0, "circle", "red", "small"), Obj(0, 2, "square", "blue", "large")))
    wrong = Scene((Obj(0, 2, "circle", "red", "small"), Obj(0, 0, "square", "blue", "large")))
    assert check(spec, right).satisfied
    verdict = check(spec, wrong)
    assert verdict.failed == ("not true: 'a small red circle left of a large blue square'",)
    assert verdict.score == pytest.approx(1 - 1 / verdict.constraints)


@pytest.mark.parametrize("text, phrases", [
    ("a circle left of a square and the square left of the circle", ["a circle left of a square",
                                                                      "a square left of the circle"]),
    ("a red circle at the center and a blue square at the center", ["a red circle at the center",
                                                                    "a blue square at the center"]),
    ("five objects", ["five objects"]),
    ("a red circle above a blue square, which is above a green triangle, which is above a cyan circle",
     ["a red circle above a blue square", "a blue square above a green triangle",
      "a green triangle above a cyan circle"]),
    ("two objects: a red circle, a blue square and a green triangle", ["two objects"]),
])
def test_contradictions_are_refused_naming_the_conflicting_phrases(text, phrases):
    with pytest.raises(Contradiction) as e:
        plan(parse_prompt(text))
    assert sorted(e.value.phrases) == sorted(phrases), e.value.phrases
    assert all(p in str(e.value) for p in phrases)


def _layouts(n: int):
    return itertools.permutations(range(GRID * GRID), n)


def test_planning_returns_a_satisfying_layout_or_a_real_contradiction():
    """Random specs with partial attributes, cells and relations: the plan satisfies the spec, and
    a Contradiction happens exactly when no assignment of cells exists (checked by enumeration)."""
    rng = np.random.default_rng(0)
    cfg = ShapesConfig()
    kinds = ["left of", "right of", "above", "below", "same row as", "same column as"]
    contradictions = 0
    for _ in range(150):
        n = int(rng.integers(1, MAX_OBJECTS + 1))
        things = tuple(Thing(shape=str(rng.choice(cfg.shapes)) if rng.random() < 0.7 else None,
                             color=str(rng.choice(cfg.colors)) if rng.random() < 0.7 else None,
                             cell=divmod(int(rng.integers(9)), 3) if rng.random() < 0.3 else None,
                             words=f"thing {i}") for i in range(n))
        relations = tuple(Relation(int(a), str(rng.choice(kinds)), int(b), f"relation {k}")
                          for k, (a, b) in enumerate(rng.integers(n, size=(int(rng.integers(0, 4)), 2))) if a != b)
        spec = Spec(things, relations)
        possible = any(
            all(t.cell in (None, divmod(c, 3)) for t, c in zip(things, cells))
            and all(holds(r.kind, Obj(*divmod(cells[r.a], 3), "circle", "red", "small"),
                          Obj(*divmod(cells[r.b], 3), "circle", "red", "small")) for r in relations)
            for cells in _layouts(n))
        try:
            scene = plan(spec, cfg, seed=int(rng.integers(100)))
        except Contradiction as e:
            assert not possible and e.phrases, spec
            contradictions += 1
            continue
        assert possible and check(spec, scene).satisfied, spec
    assert 5 <= contradictions <= 145  # both outcomes were exercised


def test_absolute_rewrites_relations_into_cells_the_model_knows():
    text = absolute(parse_prompt("a small green square left of a large blue circle"), seed=3)
    scene = parse_prompt(text)
    assert all(t.cell is not None for t in scene.things) and text == captions(plan(scene))[0]
    assert check(parse_prompt("a small green square left of a large blue circle"), plan(scene)).satisfied

