"""Judges accept the truth and reject each kind of corruption, with a reason."""

from dataclasses import replace

import numpy as np

from smalto.data.shapes import Scene, ShapesConfig, ShapesWorld, captions, render
from smalto.verify.judges import judge_answer, judge_caption, judge_drawing

WORLD = ShapesWorld(ShapesConfig(), seed=3)


def _scenes(objects: int, n: int = 5) -> list[Scene]:
    return [s for s in (WORLD.scene(i) for i in range(200)) if len(s.objects) == objects][:n]


def test_a_true_caption_scores_1_and_each_corruption_scores_0():
    for scene in _scenes(1) + _scenes(2):
        truth = judge_caption(captions(scene)[0], scene)
        assert truth.score == 1.0 and all(truth.checks.values()) and not truth.reasons
        o = scene.objects[0]
        for attr, other in (("color", "red" if o.color != "red" else "blue"),
                            ("shape", "circle" if o.shape != "circle" else "square"),
                            ("size", "small" if o.size != "small" else "large")):
            wrong = Scene((replace(o, **{attr: other}), *scene.objects[1:]))
            judged = judge_caption(captions(wrong)[0], scene)
            assert judged.score == 0.0 and not judged.checks[f"{attr}/0"] and judged.reasons
    assert judge_caption("purple elephants", _scenes(1)[0]).reasons == ["not a caption: 'purple elephants'"]


def test_answers_are_judged_exactly():
    assert judge_answer(" Yes ", "yes").score == 1.0
    wrong = judge_answer("2", "3")
    assert wrong.score == 0.0 and "3" in wrong.reasons[0]


def test_a_faithful_drawing_scores_1_and_an_unfaithful_one_0():
    cfg = WORLD.cfg
    one, two = _scenes(1)[0], _scenes(2)[0]
    for scene in (one, two):
        judged = judge_drawing(render(scene, cfg), scene, cfg)
        assert judged.score == 1.0 and all(judged.checks.values())
    assert judge_drawing(render(two, cfg), one, cfg).checks == {"exact": False, "counting": False, "colors": False,
                                                                 "position": False}
    blank = judge_drawing(np.full((cfg.image_size, cfg.image_size, 3), 255, np.uint8), one, cfg)
    assert blank.score == 0.0 and blank.reasons
