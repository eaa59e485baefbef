import numpy as np
from scipy import ndimage

from smalto.data import ShapesConfig, ShapesWorld
from smalto.verify.scene import inspect, parse_image, scene_diff
from smalto.data.shapes import BACKGROUND, Obj, Scene


def _exact_share(world, n, distort=lambda x: x):
    rng = np.random.default_rng(0)
    ok = sum(parse_image(np.clip(distort(world[i].image, rng), 0, 255), world.cfg) == world.scene(i)
             for i in range(n))
    return ok / n


def test_verifier_recovers_rendered_scenes_exactly():
    assert _exact_share(ShapesWorld(seed=11, split="all"), 1000, lambda x, rng: x) >= 0.995


def test_verifier_tolerates_decoder_like_blur_and_noise():
    world = ShapesWorld(seed=12, split="all")

    def blur_and_noise(x, rng):
        return ndimage.gaussian_filter(x.astype(np.float32), (0.6, 0.6, 0)) + rng.normal(0, 6, x.shape)

    assert _exact_share(world, 300, blur_and_noise) >= 0.99


def test_verifier_handles_jitter_and_four_objects():
    world = ShapesWorld(ShapesConfig(jitter=1.0, max_objects=4), seed=13, split="all")
    assert _exact_share(world, 300, lambda x, rng: x) >= 0.99


def test_verifier_rejects_blobs_and_ghosts_and_ignores_foreign_colours():
    image = np.full((32, 32, 3), BACKGROUND, np.uint8)
    image[2:14, 2:5] = (220, 40, 40)  # a tall red bar: no ShapesWorld shape
    image[20:28, 20:28] = (128, 128, 128)  # grey is not in the palette
    image[2:10, 20:28] = (161, 148, 34)  # a yellow square at 65% coverage: a ghost
    parse = inspect(image)
    assert sorted((d.obj.color, d.obj.shape) for d in parse.detections) == [("red", "unknown"),
                                                                            ("yellow", "unknown")]
    assert parse.unexplained > 0.05


def test_scene_diff_names_the_difference():
    a = Scene((Obj(0, 0, "circle", "red", "small"),))
    b = Scene((Obj(0, 0, "circle", "blue", "small"),))
    assert scene_diff(a, a) == []
    assert scene_diff(a, b) == ["missing small red circle at the top left",
                                "unexpected small blue circle at the top left"]
