"""The hallucination probe asks what it says it asks, and scores what it says it scores."""

import numpy as np
import pytest

from smalto.data.shapes import ShapesConfig, ShapesWorld, captions
from smalto.eval.hallucination import (POPULAR, SETTINGS, chair, eval_hallucination, mentions, negative,
                                       pope_items, pope_scores, popular_pairs)
from smalto.verify.scene import parse_image

CFG = ShapesConfig()


def _pair(question: str) -> tuple[str, str]:
    color, shape = question.removeprefix("is there a ").removesuffix("?").split()
    return color, shape


@pytest.mark.parametrize("split", ["train", "heldout"])
@pytest.mark.parametrize("setting", SETTINGS)
def test_pope_is_balanced_and_its_negatives_are_absent_objects_the_split_may_show(setting, split):
    world = ShapesWorld(CFG, 10_000, split)
    items = pope_items(world, 60, setting)
    assert [a for _, _, a in items] == ["yes", "no"] * 60
    allowed = set(CFG.pairs("train" if split == "train" else "all"))
    near = 0
    for k, (image, question, answer) in enumerate(items):
        scene = world[k // 2].scene
        assert np.array_equal(image, world[k // 2].image)
        present = {(o.color, o.shape) for o in scene.objects}
        pair = _pair(question)
        assert (pair in present) == (answer == "yes")
        if answer == "no":
            assert pair in allowed
            near += any(pair[0] == c or pair[1] == s for c, s in present)
            if setting == "popular":
                assert pair in [p for p in popular_pairs(CFG) if p in allowed and p not in present][:POPULAR]
    if setting == "adversarial":
        assert near == 60  # always a near miss: a present shape in another colour or a present colour


def test_popular_pairs_are_counted_from_the_training_stream():
    world = ShapesWorld(CFG, 0, "train")
    ranked = popular_pairs(CFG, 300)
    counts = {}
    for i in range(300):
        for o in world.scene(i).objects:
            counts[(o.color, o.shape)] = counts.get((o.color, o.shape), 0) + 1
    assert [counts[p] for p in ranked] == sorted(counts.values(), reverse=True)
    assert not set(ranked) & set(CFG.heldout)


def test_negative_refuses_an_unknown_setting():
    with pytest.raises(ValueError, match="unknown setting"):
        negative(ShapesWorld(CFG, 1)[0].scene, CFG, "train", "frequent", np.random.default_rng(0))


def test_pope_scores_show_a_yes_sayer_and_a_truthful_answerer():
    truth = ["yes", "no"] * 10
    yes_sayer = pope_scores(["yes"] * 20, truth)
    assert (yes_sayer["recall"], yes_sayer["precision"], yes_sayer["f1"]) == (100, 50, 66.7)
    assert yes_sayer["yes_ratio"] == 100
    perfect = pope_scores([" Yes", "no"] * 10, truth)
    assert (perfect["accuracy"], perfect["f1"], perfect["yes_ratio"], perfect["other"]) == (100, 100, 50, 0)
    mumbler = pope_scores(["maybe"] * 20, truth)
    assert (mumbler["f1"], mumbler["other"], mumbler["accuracy"]) == (0, 100, 0)


def test_mentions_find_every_coloured_shape_in_any_phrasing():
    assert mentions("two objects: a small red circle in the center and a large Blue square", CFG) == [
        ("red", "circle"), ("blue", "square")]
    assert mentions("three yellow triangles", CFG) == [("yellow", "triangle")]
    assert mentions("there is no square", CFG) == []


def test_chair_counts_absent_objects_in_captions():
    world = ShapesWorld(CFG, 3)
    scenes = [world[i].scene for i in range(20)]
    truthful = [captions(s)[k % 4] for k, s in enumerate(scenes)]
    assert chair(truthful, scenes, CFG) == {"chair_i": 0.0, "chair_s": 0.0,
                                            "mentions": sum(len(s.objects) for s in scenes)}
    absent = [negative(s, CFG, "train", "random", np.random.default_rng(k)) for k, s in enumerate(scenes)]
    padded = [t + f" and a small {c} {shape} at the center" for t, (c, shape) in zip(truthful[:10], absent)]
    got = chair(padded + truthful[10:], scenes, CFG)
    assert got["chair_s"] == 50.0
    assert got["chair_i"] == round(100 * 10 / (sum(len(s.objects) for s in scenes) + 10), 1)


def test_an_oracle_that_reads_the_pixels_scores_perfectly():
    """The probe's bookkeeping: answers computed from the verifier's reading of each picture."""
    world = ShapesWorld(CFG, 10_000)
    for setting in SETTINGS:
        items = pope_items(world, 30, setting)
        said = ["yes" if _pair(q) in {(o.color, o.shape) for o in parse_image(im, CFG).objects} else "no"
                for im, q, _ in items]
        got = pope_scores(said, [a for _, _, a in items])
        assert (got["f1"], got["yes_ratio"]) == (100, 50)
    said = [captions(parse_image(world[i].image, CFG))[0] for i in range(30)]
    assert chair(said, [world[i].scene for i in range(30)], CFG)["chair_i"] == 0


def test_the_section_runs_on_a_model(micro_base):
    import smalto

    report = eval_hallucination(smalto.load(micro_base), ShapesWorld(CFG, 10_000), 4)
    assert {f"pope_{s}" for s in SETTINGS} | {"chair", "primed"} <= set(report)
    for s in SETTINGS:  # each a share of the 2 x 4 questions asked: a multiple of 12.5 %
        assert all((report[f"pope_{s}"][k] / 12.5) % 1 == 0 for k in ("yes_ratio", "accuracy", "other"))
    assert set(report["primed"]) == {"primed_caption", "unprimed_caption", "primed_question", "primed_refuted"}
