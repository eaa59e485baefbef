import numpy as np
import pytest

from smalto.data import ShapesConfig, ShapesWorld, parse_caption
from smalto.data.shapes import GRID, PALETTE, captions, render
from smalto.errors import SmaltoError


def test_scenes_are_deterministic_from_the_seed():
    a, b, c = ShapesWorld(seed=1), ShapesWorld(seed=1), ShapesWorld(seed=2)
    assert all(np.array_equal(a[i].image, b[i].image) and a[i].qa == b[i].qa for i in range(20))
    assert any(a.scene(i) != c.scene(i) for i in range(20))


def test_scene_invariants():
    cfg = ShapesConfig(max_objects=4)
    world = ShapesWorld(cfg, seed=0, split="all")
    counts = set()
    for i in range(300):
        scene = world.scene(i)
        cells = [(o.row, o.col) for o in scene.objects]
        assert len(cells) == len(set(cells)), "two objects share a cell"
        assert all(0 <= r < GRID and 0 <= c < GRID for r, c in cells)
        counts.add(len(scene.objects))
    assert counts == {1, 2, 3, 4}


def test_render_uses_only_palette_colours_and_background():
    s = ShapesWorld(seed=0)[0]
    assert s.image.shape == (32, 32, 3) and s.image.dtype == np.uint8
    colours = {tuple(p) for p in s.image.reshape(-1, 3)}
    assert colours == {(24, 24, 24)} | {PALETTE[o.color] for o in s.scene.objects}


def test_image_size_is_configurable():
    cfg = ShapesConfig(image_size=48)
    assert render(ShapesWorld(cfg).scene(0), cfg).shape == (48, 48, 3)


def test_heldout_pairs_never_in_train_and_always_in_heldout():
    cfg = ShapesConfig()
    train, heldout = ShapesWorld(cfg, 0, "train"), ShapesWorld(cfg, 0, "heldout")
    for i in range(500):
        pairs = {(o.color, o.shape) for o in train.scene(i).objects}
        assert not pairs & set(cfg.heldout)
        assert {(o.color, o.shape) for o in heldout.scene(i).objects} & set(cfg.heldout)
    # Train text never names a held-out pair either (e.g. in a "no" answer).
    for i in range(300):
        s = train[i]
        text = " ".join(s.captions + [p["q"] for p in s.qa])
        assert not any(f"{c} {sh}" in text for c, sh in cfg.heldout)


def test_captions_paraphrase_and_canonical_round_trips():
    world = ShapesWorld(seed=4)
    for i in range(200):
        s = world[i]
        assert len(set(s.captions)) >= 3
        assert parse_caption(s.captions[0]) == s.scene
    assert parse_caption("a purple elephant") is None


def test_relational_caption_is_true():
    from smalto.data.shapes import Obj, Scene

    scene = Scene((Obj(0, 0, "circle", "red", "small"), Obj(0, 2, "square", "blue", "large")))
    assert "a small red circle left of a large blue square" in captions(scene)


def test_qa_answers_are_consistent_with_the_scene():
    world = ShapesWorld(seed=5)
    kinds, yes, no = set(), 0, 0
    for i in range(400):
        s = world[i]
        for p in s.qa:
            kinds.add(p["type"])
            if p["q"] == "how many objects are there?":
                assert p["a"] == str(len(s.scene.objects))
            if p["type"] == "exists":
                yes += p["a"] == "yes"
                no += p["a"] == "no"
                color, shape = p["q"].removeprefix("is there a ").removesuffix("?").split()
                assert (p["a"] == "yes") == (s.scene.count(shape, color) > 0)
            if p["type"] == "where":
                color, shape = p["q"].removeprefix("where is the ").removesuffix("?").split()
                (o,) = [o for o in s.scene.objects if (o.color, o.shape) == (color, shape)]
                assert p["a"] == o.position
    assert kinds >= {"count", "color", "shape", "exists", "where", "left_of", "above", "size"}
    assert 0.4 < yes / (yes + no) < 0.6, "is-there questions should be balanced"


@pytest.mark.parametrize("kwargs", [dict(max_objects=5), dict(min_objects=0), dict(shapes=("hexagon",)),
                                    dict(colors=("mauve",)), dict(heldout=(("red", "hexagon"),))])
def test_bad_config_is_a_clear_error(kwargs):
    with pytest.raises(SmaltoError):
        ShapesConfig(**kwargs)
