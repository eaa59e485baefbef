"""Clips end to end: the training stream's clip tasks, a model trained on them, and the pipeline,
command line and errors around it."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

import smalto
from smalto.data.motion import MotionWorld
from smalto.data.video import load_clip, save_clip
from smalto.errors import SmaltoError
from smalto.format import Vocab, positions
from smalto.tokenizers import load_tokenizers
from smalto.data.tasks import CLIP_TASKS, TASKS
from smalto.training.data import ExampleStream, TaskMix

CLIP = MotionWorld(seed=7)[0].frames


def test_clip_examples_are_well_formed_and_train_what_they_should(video_tokenizers):
    tok = load_tokenizers(video_tokenizers)
    v = Vocab.from_tokenizers(tok, "grid")
    m = v.modalities["video"]
    assert (m.frames, m.grid, m.tokens) == (3, (8, 8), 3 * 64 + 2)
    for task in CLIP_TASKS:
        stream = ExampleStream(tok, v, "shapes", TaskMix(**{"caption": 0, "draw": 0, "qa": 0, task: 1}), max_len=320)
        for k, e in stream.examples(0, 4):
            assert TASKS[k] == task
            start, end = e.ids.index(v.bov), e.ids.index(v.eov)
            assert end - start - 1 == m.tokens and e.ids[start + 1:end].count(v.eof) == 2
            assert torch.equal(e.positions, positions(v, e.ids))
            trained = [i for i, t in enumerate(e.loss_mask) if t]
            if task == "clip_next":  # the given latent frames are context, the rest is trained
                assert trained[0] in (start + 1 + 65, start + 1 + 130) and trained[-1] == len(e.ids) - 1
            if task == "clip_draw":
                assert trained[0] == start and e.ids[-1] == v.eos
    pictures = replace(tok, video=None)
    with pytest.raises(SmaltoError, match="video tokenizer"):
        ExampleStream(pictures, Vocab.from_tokenizers(pictures), "shapes", TaskMix(clip_qa=1), max_len=320)
    with pytest.raises(SmaltoError, match="no room"):
        ExampleStream(tok, v, "shapes", TaskMix(clip_qa=1), max_len=160)


def test_a_folder_of_clips_trains_the_clip_tasks(video_tokenizers, tmp_path):
    from smalto.data import write_clips, write_shapes
    from smalto.data.folder import load_clip_folder

    tok = load_tokenizers(video_tokenizers)
    v = Vocab.from_tokenizers(tok, "grid")
    folder = write_clips(tmp_path / "clips", 6, seed=3)
    clips = load_clip_folder(folder).clips
    codes = tok.video.encode(np.stack(clips))
    stream = ExampleStream(tok, v, str(folder), TaskMix(caption=0, draw=0, qa=0, clip_caption=1, clip_draw=1,
                                                        clip_qa=1, clip_next=1), max_len=384)
    seen = set()
    for k, e in stream.examples(0, 12):  # two epochs: every clip, tokenized as the video tokenizer encodes it
        start = e.ids.index(v.bov)
        body = e.ids[start:start + v.modalities["video"].tokens + 2]
        if TASKS[k] != "clip_next":
            seen |= {i for i in range(6) if v.video_ids(codes[i]) == body}
        assert torch.equal(e.positions, positions(v, e.ids))
    assert seen == set(range(6))
    assert stream.examples(3, 2)[1][1].ids == stream.examples(4, 1)[0][1].ids  # a pure function of the index
    index = folder / "data.jsonl"
    lines = [json.loads(line) for line in index.read_text().splitlines()]
    index.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "qa"}) + "\n" for r in lines))
    asked = ExampleStream(tok, v, str(folder), TaskMix(caption=0, draw=0, qa=0, clip_qa=1), max_len=384)
    texts = {tuple(tok.text.encode(r["text"])) for r in lines}
    for _, e in asked.examples(0, 6):  # a clip without questions is described instead
        answer = e.ids[e.ids.index(v.assistant) + 1:-1]
        assert tuple(answer) in texts
    with pytest.raises(SmaltoError, match="trains the clip tasks only"):
        ExampleStream(tok, v, str(folder), TaskMix(caption=1, clip_qa=1), max_len=384)
    pictures = write_shapes(tmp_path / "pictures", 4)
    with pytest.raises(SmaltoError, match="is a folder of pictures"):
        ExampleStream(tok, v, str(pictures), TaskMix(clip_qa=1), max_len=384)


def test_a_model_trained_on_clips_reads_draws_and_continues_them(micro_clips):
    pipe = smalto.load(micro_clips)
    assert pipe.reads_clips and pipe.clip_frames == 7 and pipe.vocab.position_rule == "grid"
    assert pipe.model.cfg.rope == "mrope"
    clips = pipe.generate("a small red circle moves right slowly from the top left", n=2, modality="video", seed=1)
    assert len(clips) == 2 and clips[0].shape == (7, 32, 32, 3) and clips[0].dtype == np.uint8
    given = pipe.continue_clip(CLIP, given=1)[0]
    first = pipe.tokenizers.image.decode(pipe.tokenizers.image.encode(CLIP[:1]))[0]
    np.testing.assert_array_equal(given[0], first)  # the given frame is kept
    assert isinstance(pipe.caption(CLIP), str) and isinstance(pipe.ask(CLIP, "how many objects move?"), str)
    assert isinstance(pipe.caption(CLIP[0]), str)  # and pictures as before
    with pytest.raises(SmaltoError, match="clips of 7 frames, got 3"):
        pipe.caption(CLIP[:3])
    with pytest.raises(SmaltoError, match="1 to 2 latent frames"):
        pipe.continue_clip(CLIP, given=3)
    assert list(pipe.codecs) == ["video", "image"] and pipe.codec_for(CLIP).name == "video"
    with pytest.raises(SmaltoError, match="one kind of item, not image and video together"):
        pipe.caption_batch([CLIP, CLIP[0]])
    with pytest.raises(SmaltoError, match="draws video and image, not 'smell'"):
        pipe.generate("a rose", modality="smell")
    with pytest.raises(SmaltoError, match="was not trained on sounds"):
        pipe.generate("a hum", modality="audio")
    with pytest.raises(SmaltoError, match="without test-time effort"):
        pipe.generate("a small red circle moves right slowly from the top left", modality="video", effort="high")


def test_a_model_without_clips_says_so(micro_base):
    pictures = smalto.load(micro_base)
    assert not pictures.reads_clips
    with pytest.raises(SmaltoError, match="not trained on clips"):
        pictures.caption(CLIP)
    with pytest.raises(SmaltoError, match="not trained on clips"):
        pictures.generate("a small red circle moves right slowly from the top left", modality="video")
    assert list(pictures.codecs) == ["image"]


def run(model, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smalto", *map(str, args), "--model", model],
                          capture_output=True, text=True, timeout=300)


def test_the_command_line_draws_clips(micro_clips, tmp_path):
    out = tmp_path / "clip.gif"
    r = run(micro_clips, "generate", "--video", "a large blue square stays at the center", "--out", out)
    assert r.returncode == 0, r.stderr
    assert load_clip(out, 32).shape == (7, 32, 32, 3)
    r = run(micro_clips, "generate", "--video", "a clip", "--out", tmp_path / "clip.png")
    assert r.returncode == 2 and ".gif or .webp" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow  # three more processes that each load torch and the model
def test_the_command_line_captions_answers_and_continues_clips(micro_clips, tmp_path):
    save_clip(CLIP, tmp_path / "given.webp")
    for args in (("caption", tmp_path / "given.webp"), ("ask", tmp_path / "given.webp", "how many objects move?"),
                 ("continue", tmp_path / "given.webp", "--out", tmp_path / "next.gif")):
        r = run(micro_clips, *args)
        assert r.returncode == 0 and r.stdout.strip(), r.stderr
    assert load_clip(tmp_path / "next.gif", 32).shape == (7, 32, 32, 3)


def test_a_three_axis_model_is_not_exported_and_says_why(micro_clips, tmp_path):
    from smalto.export import export_hf

    with pytest.raises(SmaltoError, match="mrope model does not export to transformers"):
        export_hf(micro_clips, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
