"""The user-facing API on bad and odd input: clear errors or documented behaviour, never a crash."""

import numpy as np
import pytest
import torch
from PIL import Image

from smalto.data import ShapesWorld
from smalto.errors import SmaltoError
from smalto.model import Transformer, preset
from smalto.pipeline import Pipeline
from smalto.format import Vocab
from smalto.tokenizers import load_tokenizers


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    tok = load_tokenizers()
    vocab = Vocab.from_tokenizers(tok)
    torch.manual_seed(0)
    return Pipeline(Transformer(preset("shapes-micro", vocab.size)).eval(), vocab, tok)


IMAGE = ShapesWorld(seed=0)[0].image


def test_drawing_returns_images_of_the_models_size(pipe):
    images = pipe.generate_image("a small red circle at the top left", n=3, seed=1)
    assert len(images) == 3 and all(im.shape == (32, 32, 3) and im.dtype == np.uint8 for im in images)
    assert np.array_equal(images[0], pipe.generate_image("a small red circle at the top left", n=3, seed=1)[0])


@pytest.mark.parametrize("prompt", ["a zorblax wibbling at the top left", "🎨 a red 🟥 square", "Красный круг"])
def test_unknown_words_and_emoji_are_just_text(pipe, prompt):
    assert pipe.generate_image(prompt)[0].shape == (32, 32, 3)


@pytest.mark.parametrize("prompt, match", [("", "empty"), ("   ", "empty"), ("word " * 200, "context")])
def test_bad_prompts_are_clear_errors(pipe, prompt, match):
    with pytest.raises(SmaltoError, match=match):
        pipe.generate_image(prompt)


def test_n_is_bounded(pipe):
    with pytest.raises(SmaltoError, match="n must be"):
        pipe.generate_image("a red circle", n=0)


def test_reading_accepts_paths_pil_and_arrays_of_any_size(pipe, tmp_path):
    Image.fromarray(IMAGE).resize((300, 200)).convert("RGBA").save(tmp_path / "big.png")
    texts = [pipe.caption(IMAGE), pipe.caption(Image.fromarray(IMAGE)), pipe.caption(tmp_path / "big.png")]
    assert all(isinstance(t, str) for t in texts)
    assert texts[0] == texts[1]
    assert isinstance(pipe.ask(IMAGE, "how many circles are there?", beams=3), str)


def test_reading_bad_images_is_a_clear_error(pipe, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(SmaltoError, match="notes.txt"):
        pipe.caption(tmp_path / "notes.txt")
    with pytest.raises(SmaltoError, match="not found"):
        pipe.caption(tmp_path / "missing.png")
    with pytest.raises(SmaltoError, match="uint8"):
        pipe.caption(np.zeros((32, 32), np.float32))
    with pytest.raises(SmaltoError, match="empty"):
        pipe.ask(IMAGE, "  ")


def test_shipped_model_stays_above_its_floor():
    """Fixed seeds make this exact on one machine; the floors sit well under the measured numbers
    (README, unseen scenes) so that only a real regression, not float noise across platforms, trips
    them; each names who answered (the model's own tokens unless said)."""
    import smalto
    from smalto.eval.shapes_eval import EvalConfig, eval_questions, evaluate

    pipe = smalto.load()
    assert pipe.model.cfg.n_layers == 6 and pipe.draw_defaults["guidance"] > 0
    small = EvalConfig(captions=48, questions=96, drawings=16, premises=48, relations=8, conversations=24,
                       hallucination=16, clips=24, clip_drawings=8, sounds=24, sound_drawings=8)
    report = evaluate(pipe, small, kinds=("unseen", "heldout"))
    assert report["scenes"]["verified"]  # checked against the recorded training streams
    unseen, heldout = report["unseen"], report["heldout"]
    assert unseen["caption"]["exact"] >= 70
    assert unseen["qa"]["overall"] >= 45 and unseen["qa"]["overall"] > unseen["qa"]["majority_baseline"]
    assert unseen["draw"]["counting"] >= 40 and unseen["draw"]["judges"]["agreement"] >= 90
    talk = unseen["conversation"]  # v2 learned to converse: held-out greetings and requests, follow-ups
    assert talk["follow_up"] >= 40 and talk["greeting"] >= 25 and talk["off_topic"] >= 50
    clips = unseen["video"]  # v3 reads, draws and continues clips, better than copying the given frames
    assert clips["caption_exact"] >= 10 and clips["qa_overall"] >= 45
    assert clips["continue_exact"] > clips["copy_exact"] and clips["continue_motion"] > clips["copy_motion"]
    heard = unseen["sound"]  # v9 reads sounds and makes them in the cells layout (84 and 78 % on 32 each)
    assert heard["caption_exact"] >= 25 and heard["draw_faithful"] >= 37.5 and heard["picture_to_sound"] >= 50
    assert heard["draw_given_words"] >= 87.5  # (sound QA beside its baseline: 100 questions, docs/audio.md)
    # thinking: the model's own answers, and the solver's from its description, both scored
    from smalto.data.shapes import ShapesConfig
    from smalto.eval.scenes import scene_kinds

    scenes = scene_kinds(ShapesConfig(), small.seed, pipe.streams, ("unseen",)).kinds["unseen"]
    thinking = eval_questions(pipe, scenes, 48, "medium")
    assert thinking["model"] >= 45 and thinking["solver_answered"] >= 90 and thinking["overall"] >= 80
    # held-out compositions: it reads their colours and counts, and draws none of them exactly
    assert heldout["caption"]["color"] >= 70 and heldout["caption"]["count"] >= 80
    assert heldout["draw"]["two_objects"] <= 20


def test_the_shipped_model_holds_the_conversations_people_start_with(shipped):
    """Issue 27's walls: a text-only second turn, the ordinary ways of asking for a description,
    thanks, a drawing outside the world. (A greeting sent with a picture is not yet reliable: the
    held-out conversation set measures it.)"""
    from smalto.data.shapes import parse_caption
    from smalto.data.talk import DRAW_SCOPE_REPLY, HELLO_REPLY, OFF_TOPIC_REPLY, THANKS_REPLY
    from smalto.pipeline import Message

    assert shipped.chat([Message("user", "hello")]) == HELLO_REPLY
    assert shipped.chat([Message("user", "tell me a joke")]) == OFF_TOPIC_REPLY
    for ask in ("describe the picture", "describe this image", "caption this image"):
        assert parse_caption(shipped.chat([Message("user", ask, images=[IMAGE])])) is not None, ask
    assert shipped.chat([Message("user", "thanks")]) == THANKS_REPLY
    assert shipped.chat([Message("user", "draw a cat wearing a hat")]) == DRAW_SCOPE_REPLY


# (v5 failed this, answering "i see no picture..."; v4 and v6 pass)
def test_a_text_only_second_turn_outside_the_world_gets_the_off_topic_reply(shipped):
    from smalto.data.talk import HELLO_REPLY, OFF_TOPIC_REPLY
    from smalto.pipeline import Message

    talk = [Message("user", "hello"), Message("assistant", HELLO_REPLY),
            Message("user", "what is the capital of france?")]
    assert shipped.chat(talk) == OFF_TOPIC_REPLY


def test_what_a_model_can_do_is_recorded_at_training_and_read_by_load(micro_base, tmp_path):
    import json
    import shutil

    import smalto
    from smalto.data.tasks import capabilities

    assert capabilities({"caption": 0.3, "draw": 0.4, "qa": 0.3}) == {"reads": ["image"], "draws": ["image"],
                                                                       "thinks": False}
    assert capabilities({"clip_next": 1, "think": 0.1, "draw": 0}) == {"reads": ["image", "video"],
                                                                       "draws": ["video"], "thinks": True}
    meta = json.loads((micro_base / "meta.json").read_text())
    assert meta["capabilities"] == capabilities(meta["train"]["mix"]) == {"reads": ["image"], "draws": ["image"],
                                                                           "thinks": False}
    run = tmp_path / "run"
    shutil.copytree(micro_base, run)
    # The record, not the mix, decides: a model said to think is asked to, though its mix had none.
    (run / "meta.json").write_text(json.dumps(meta | {"capabilities": {**meta["capabilities"], "thinks": True}}))
    assert smalto.load(run).thinks and not smalto.load(micro_base).thinks
    (run / "meta.json").write_text(json.dumps(meta | {"capabilities": {"reads": "everything"}}))
    with pytest.raises(SmaltoError, match="meta.json: 'capabilities' must be"):
        smalto.load(run)
    del meta["capabilities"]  # a checkpoint from before the record: its mix says
    (run / "meta.json").write_text(json.dumps(meta))
    assert not smalto.load(run).thinks and not smalto.load(run).reads_clips
    assert smalto.load().reads_clips and smalto.load().thinks  # the shipped model's record
