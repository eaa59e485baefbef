"""ShapesWorld in motion: clips, their language, and the verifier that reads them back."""

import numpy as np
import pytest

from smalto.data.motion import (DIRECTIONS, LATTICE, Clip, MotionConfig, MotionWorld, Mover, clip_captions,
                                parse_clip_caption, passes, render_clip)
from smalto.errors import SmaltoError
from smalto.verify.motion import clip_diff, parse_clip


def test_clips_are_deterministic_and_keep_objects_apart_and_on_the_lattice():
    world = MotionWorld(seed=3)
    a, b = world[5], world[5]
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.clip == b.clip and a.frames.shape == (7, 32, 32, 3)
    for i in range(200):
        clip = world.clip(i)
        looks = [(m.color, m.shape) for m in clip.movers]
        assert len(set(looks)) == len(looks)
        for t in range(clip.frames):
            points = [m.at(t) for m in clip.movers]
            assert all(0 <= p < LATTICE for xy in points for p in xy)
            for j, p in enumerate(points):
                for q in points[j + 1:]:
                    assert max(abs(p[0] - q[0]), abs(p[1] - q[1])) >= 2
        assert all(m.free and m.x % 2 == 0 and m.y % 2 == 0 for m in clip.movers)
        assert all(m.cell(clip.frames - 1) is not None for m in clip.movers)


def test_objects_bounce_off_the_border_and_keep_their_speed():
    m = Mover("circle", "red", "small", 0, 2, 1, 0)
    assert [m.at(t)[0] for t in range(10)] == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1]
    fast = Mover("circle", "red", "small", 2, 4, 2, -2)
    assert [fast.at(t) for t in range(4)] == [(2, 4), (4, 2), (2, 0), (0, 2)]
    assert fast.direction == "up and right" and not Mover("square", "red", "small", 0, 0, -1, 0).free


def test_heldout_motions_appear_only_in_the_heldout_split():
    held = set(MotionConfig().heldout)
    train, heldout = MotionWorld(split="train"), MotionWorld(split="heldout")
    for i in range(150):
        assert not any((m.shape, m.direction) in held for m in train.clip(i).movers)
        assert any((m.shape, m.direction) in held for m in heldout.clip(i).movers)


def test_canonical_captions_read_back_to_the_clip():
    world = MotionWorld(seed=1)
    for i in range(100):
        clip = world.clip(i)
        assert parse_clip_caption(clip_captions(clip)[0], clip.frames) == clip
    assert parse_clip_caption("a small red circle") is None


def test_questions_are_answered_by_the_clip():
    world = MotionWorld(seed=2)
    for i in range(60):
        sample = world[i]
        moving = [m for m in sample.clip.movers if m.moves]
        for qa in sample.qa:
            if qa["type"] == "count_moving":
                assert qa["a"] == str(len(moving))
            if qa["type"] == "which":
                assert qa["a"] == f"the {moving[0].color} {moving[0].shape}"
    a, b = Mover("circle", "red", "small", 0, 0, 1, 0), Mover("square", "blue", "small", 2, 2)
    assert passes(a, b, 7) and not passes(Mover("circle", "red", "small", 0, 0), b, 7)


def test_the_verifier_reads_rendered_clips_back_exactly():
    # the bar is 99.5 %; every miss is printed
    world = MotionWorld(seed=10000)
    misses = [(i, clip_diff(world.clip(i), parse_clip(world[i].frames))) for i in range(200)]
    misses = [m for m in misses if m[1]]
    assert len(misses) <= 1, misses


def test_the_verifier_names_what_is_wrong_with_a_clip():
    clip = Clip((Mover("circle", "red", "large", 0, 0, 1, 0), Mover("square", "blue", "large", 0, 4)), 7)
    frames = render_clip(clip, MotionConfig().world)
    assert parse_clip(frames).clip == clip
    jumped = frames.copy()
    jumped[2] = frames[4]  # the circle jumps ahead: no constant velocity explains its path
    assert any("constant velocity" in p for p in parse_clip(jumped).problems)
    gone = frames.copy()
    gone[4] = render_clip(Clip(clip.movers[1:], 7), MotionConfig().world)[4]
    assert any("missing from frame 4" in p for p in parse_clip(gone).problems)
    assert clip_diff(clip, parse_clip(jumped))


def test_configs_refuse_what_the_world_cannot_make():
    with pytest.raises(SmaltoError, match="odd"):
        MotionConfig(frames=8)
    with pytest.raises(SmaltoError, match="held-out motion"):
        MotionConfig(heldout=(("circle", "sideways"),))
    still = MotionWorld(MotionConfig(motion="still"))
    assert not any(m.moves for i in range(20) for m in still.clip(i).movers)
    assert set(DIRECTIONS.values()) >= {d for _, d in MotionConfig().heldout}


def test_clip_folders_round_trip_with_their_motion_and_bad_records_name_their_line(tmp_path):
    import json

    from smalto.data import load_clip_folder, load_folder, write_clips
    from smalto.verify.motion import parse_clip

    out = write_clips(tmp_path / "clips", 4, seed=3)
    folder = load_clip_folder(out)
    world = MotionWorld(seed=3)
    for i, (record, frames) in enumerate(zip(folder.records, folder.clips)):
        assert record.motion == world.clip(i) == parse_clip(frames).clip
        assert record.frames == [world.clip(i).scene(t) for t in range(7)] and record.text == world[i].captions[0]
    with pytest.raises(SmaltoError, match="holds clips"):
        load_folder(out)
    lines = (out / "data.jsonl").read_text().splitlines()
    bad = json.loads(lines[1])
    bad["frames"] = bad["frames"][:3]
    lines[1] = json.dumps(bad)
    (out / "data.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SmaltoError, match=r"data.jsonl:2: the clip has 7 frames, its 'frames' says 3"):
        load_clip_folder(out)
    lines[1] = lines[1].replace("clips/000002.gif", "../outside.gif")
    (out / "data.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SmaltoError, match="data.jsonl:2"):
        load_clip_folder(out)
