"""The causal video tokenizer: an image is a one-frame clip with the same codes, a frame never
changes what came before it, and it trains, saves and loads."""

import itertools

import numpy as np
import pytest
import torch

from smalto.data.motion import MotionWorld
from smalto.data.video import as_clip, clip_bytes, load_clip
from smalto.errors import SmaltoError
from smalto.tokenizers import load_tokenizers
from smalto.training.video_tokenizer import VideoTrainConfig, evaluate_video_tokenizer, motion_world, \
    train_video_tokenizer
from smalto.tokenizers.video import VideoTokenizer, VideoTokenizerConfig

IMAGE = load_tokenizers().image


def fresh(seed: int = 0) -> VideoTokenizer:
    torch.manual_seed(seed)
    return VideoTokenizer(IMAGE, VideoTokenizerConfig(width=16, blocks=1)).eval()


CLIPS = MotionWorld(seed=4).clips(0, 3)


def test_an_image_is_a_one_frame_clip_with_the_image_codes():
    tok = fresh()
    codes = tok.encode(CLIPS)
    assert codes.shape == (3, 3, 8, 8)  # 7 frames: the first alone, then two groups of 4 (the last padded)
    torch.testing.assert_close(codes[:, 0], IMAGE.encode(CLIPS[:, 0]), rtol=0, atol=0)
    torch.testing.assert_close(tok.encode(CLIPS[:, :1])[:, 0], IMAGE.encode(CLIPS[:, 0]), rtol=0, atol=0)
    assert tok.decode(codes).shape == (3, 9, 32, 32, 3)
    np.testing.assert_array_equal(tok.decode(codes[:, :1])[:, 0], IMAGE.decode(codes[:, 0]))


def test_a_frame_never_changes_the_codes_or_frames_before_it():
    tok = fresh(1)
    codes = tok.encode(CLIPS)
    later = CLIPS.copy()
    later[:, 5:] = CLIPS[::-1, 5:]  # frames 5 and 6 belong to the last latent frame
    changed = tok.encode(later)
    torch.testing.assert_close(changed[:, :2], codes[:, :2], rtol=0, atol=0)
    assert not torch.equal(changed[:, 2], codes[:, 2])
    # decoding: a later latent frame never changes the frames of earlier ones
    swapped = codes.clone()
    swapped[:, 2] = codes[[1, 2, 0], 2]
    before, after = tok.decode(codes), tok.decode(swapped)
    np.testing.assert_array_equal(after[:, :5], before[:, :5])
    assert (after[:, 5:] != before[:, 5:]).any()


def test_training_lowers_the_loss_and_the_weights_round_trip(tmp_path):
    tok = fresh(2)
    world = motion_world(tok, 0)
    batches = (world.clips(i, 4) for i in itertools.count(0, 4))
    log = train_video_tokenizer(tok, batches, VideoTrainConfig(steps=12, batch_size=4, lr=3e-3, warmup=2,
                                                               log_every=4), progress=False)
    assert log[-1]["mse"] < log[0]["mse"] / 2
    metrics, clips, recon = evaluate_video_tokenizer(tok, motion_world(tok, 1), 2)
    assert clips.shape == recon.shape == (2, 7, 32, 32, 3) and metrics.clip_agreement <= metrics.frame_agreement
    # (a clip agrees only when every one of its frames does)
    assert metrics.frame_agreement >= 100 / 7 - 1e-9  # the first frame is the image tokenizer's, exact
    IMAGE.save(tmp_path)
    tok.save(tmp_path)
    back = VideoTokenizer.load(tmp_path, IMAGE)
    torch.testing.assert_close(back.encode(CLIPS), tok.encode(CLIPS), rtol=0, atol=0)
    (tmp_path / "video.json").write_text('{"width": 32, "blocks": 1}')
    with pytest.raises(SmaltoError, match="does not fit"):
        VideoTokenizer.load(tmp_path, IMAGE)


def test_clip_files_round_trip_and_bad_clips_are_refused(tmp_path):
    path = tmp_path / "c.gif"
    path.write_bytes(clip_bytes(CLIPS[0], "GIF"))
    np.testing.assert_array_equal(load_clip(path, 32), CLIPS[0])
    (tmp_path / "bad.gif").write_bytes(clip_bytes(CLIPS[0])[:200])
    with pytest.raises(SmaltoError, match="bad.gif"):
        load_clip(tmp_path / "bad.gif", 32)
    with pytest.raises(SmaltoError, match="over the limit of 4"):
        load_clip(path, 32, max_frames=4)
    with pytest.raises(SmaltoError, match="frame 1 is 16×16"):
        as_clip([CLIPS[0, 0], CLIPS[0, 1, :16, :16]], 32)
    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image
    Image.fromarray(CLIPS[0, 0]).save(frames / "0.png")
    Image.fromarray(CLIPS[0, 1, :16, :16]).save(frames / "1.png")
    with pytest.raises(SmaltoError, match="1.png: the frame is 16×16"):
        load_clip(frames, 32)
    with pytest.raises(SmaltoError, match="video tokenizer expects"):
        fresh().encode(CLIPS[:, :, :16])


def test_a_still_clip_keeps_its_frames_though_writers_merge_identical_ones(tmp_path):
    from smalto.data.motion import MotionConfig

    still = MotionWorld(MotionConfig(motion="still"))[0].frames
    for fmt in ("GIF", "WEBP"):
        np.testing.assert_array_equal(load_clip(clip_bytes(still, fmt), 32), still)
    half = np.concatenate([still[:3], CLIPS[0, 3:]])  # three identical frames, then motion
    np.testing.assert_array_equal(load_clip(clip_bytes(half, "GIF"), 32), half)
