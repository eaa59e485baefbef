"""The kinds of evaluation scene: the reserve rule, recorded training streams, the replay that tells
seen from unseen scenes, and the second reader that checks the drawing verifier."""

import json
from dataclasses import replace

import numpy as np
import pytest

from smalto.data.shapes import ShapesConfig, ShapesWorld, is_reserved, parse_caption, scene_key
from smalto.errors import SmaltoError
from smalto.eval.scenes import scene_kinds, seen_by
from smalto.data.tasks import CLIP_TASKS, TASKS
from smalto.training.data import ExampleStream, TaskMix, seen_scenes, stream_record
from smalto.verify.scene import parse_image
from smalto.verify.second_reader import read


@pytest.mark.parametrize("seed", [0, 7, 10_000])
def test_the_reserve_keeps_the_same_scenes_out_of_every_training_stream(seed):
    cfg = ShapesConfig()
    train = [ShapesWorld(cfg, seed, "train").scene(i) for i in range(400)]
    unseen = [ShapesWorld(cfg, seed, "unseen").scene(i) for i in range(200)]
    assert not any(is_reserved(s, cfg.reserve) for s in train)
    assert all(is_reserved(s, cfg.reserve) for s in unseen)
    assert {len(s.objects) for s in unseen} == {1, 2, 3}  # every size of scene has unseen ones
    pairs = set(cfg.pairs("train"))
    assert all((o.color, o.shape) in pairs for s in unseen for o in s.objects)  # training compositions only
    # the rule is about the scene alone: about one scene graph in `reserve`
    every = [ShapesWorld(replace(cfg, reserve=0), seed, "train").scene(i) for i in range(2000)]
    assert 0.08 < np.mean([is_reserved(s, 8) for s in every]) < 0.17


def test_a_world_without_a_reserve_has_no_unseen_split():
    with pytest.raises(SmaltoError, match="no unseen split"):
        ShapesWorld(ShapesConfig(reserve=0), 0, "unseen").scene(0)
    with pytest.raises(SmaltoError, match="reserve"):
        ShapesConfig(reserve=1)


def test_a_caption_with_words_outside_the_grammar_is_no_caption():
    text = "a small red circle at the top left and a large blue square at the center"
    assert parse_caption(text) is not None and len(parse_caption(text).objects) == 2
    for bad in (text + " and a dog", "i think " + text, text + ", probably", "a small red circle at the top left, "
                "a large blue square at the center", text.replace(" and ", " and and ")):
        assert parse_caption(bad) is None, bad


def test_replaying_a_recorded_stream_finds_exactly_the_scenes_it_showed(video_tokenizers):
    from smalto.format import Vocab
    from smalto.tokenizers import load_tokenizers

    tokenizers = load_tokenizers(video_tokenizers)
    vocab = Vocab.from_tokenizers(tokenizers)
    mix = TaskMix(caption=0.2, draw=0.2, qa=0.1, clip_caption=0.3, clip_next=0.2)
    stream = ExampleStream(tokenizers, vocab, "shapes", mix, seed=3, max_len=384)
    shown = {scene_key(stream.world.scene(i)) for i, (task, _) in enumerate(stream.examples(0, 48))
             if TASKS[task] not in CLIP_TASKS}
    record = stream_record(stream, 48)
    assert record == json.loads(json.dumps(record))  # it goes into meta.json as it is
    assert seen_scenes([record]) == shown and 0 < len(shown) < 48  # the clip examples showed no picture


def test_a_training_run_records_its_stream_and_a_fine_tuning_run_adds_to_it(micro_clips, tmp_path):
    from smalto.checkpoint import read_meta
    from smalto.training.trainer import TrainConfig, train

    (first,) = read_meta(micro_clips)["streams"]
    assert first["data"] == "shapes" and first["seed"] == 0 and first["examples"] == 6 * 8
    assert first["reserve"] == ShapesConfig().reserve and first["mix"]["clip_next"] == 1
    train(tmp_path / "ft", TrainConfig(init_from=str(micro_clips), steps=1, batch_size=4, warmup=0, seed=5,
                                       eval_every=0, save_every=1, precision="fp32", mix=TaskMix()), progress=False)
    earlier, mine = read_meta(tmp_path / "ft")["streams"]
    assert earlier == first and mine["seed"] == 5 and mine["examples"] == 4


def test_the_shipped_models_kinds_of_scene_are_what_they_say():
    from smalto.checkpoint import read_meta
    from smalto.pipeline import DEFAULT_MODEL

    streams = read_meta(DEFAULT_MODEL)["streams"]
    seen = seen_by(streams)  # (the replay is tested above; this one is shared with the floor test's)
    found = scene_kinds(ShapesConfig(), 10_000, streams)
    assert found.verified and found.seen_scenes == len(seen)
    kinds = found.kinds
    assert all(scene_key(kinds["seen"].scene(i)) in seen for i in range(300))
    assert all(scene_key(kinds["unseen"].scene(i)) not in seen for i in range(300))
    # it saw every one-object scene of the world: none is left to be unseen
    assert not any(len(kinds["unseen"].scene(i).objects) == 1 for i in range(300))
    held = ShapesConfig().heldout
    assert all(any((o.color, o.shape) in held for o in kinds["heldout"].scene(i).objects) for i in range(100))
    # without records, there is no seen kind and the unseen one rests on the rule
    blind = scene_kinds(ShapesConfig(), 10_000, None)
    assert set(blind.kinds) == {"unseen", "heldout"} and not blind.verified


def test_the_second_reader_reads_renders_exactly_and_disagrees_with_a_wrong_picture():
    cfg = ShapesConfig()
    world = ShapesWorld(cfg, 5, "all")
    assert all(read(world[i].image, cfg) == world[i].scene for i in range(300))
    # channels rotated (red -> green-ish, blue -> red-ish, ...): the same shapes in the same cells,
    # every colour another, so never the true scene
    assert all(read(world[i].image[..., [2, 0, 1]], cfg) != world[i].scene for i in range(50))
    # it is a different reader: a blurred picture can fool one and not the other, but on the
    # renders both see the same scene
    assert all(read(world[i].image, cfg) == parse_image(world[i].image, cfg) for i in range(50))
