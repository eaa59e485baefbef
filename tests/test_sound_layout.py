"""Sounds drawn in the cells layout: each ShapesWorld cell's words, then the codes of its time slot
(`Vocab.with_layout`, `data.sounds.slot_codes`), from the training stream to the pipeline."""

import pytest
import torch

from smalto.data.shapes import ShapesWorld, captions, cell_words
from smalto.data.sounds import SoundConfig, SoundWorld, slot_codes
from smalto.errors import SmaltoError
from smalto.format import Allowed, Vocab, draw_prompt
from smalto.inference import Engine, Sampling
from smalto.model import Transformer, preset
from smalto.pipeline import Pipeline
from smalto.tokenizers import load_tokenizers
from smalto.training.data import ExampleStream, TaskMix
from smalto.training.trainer import TrainConfig, _drawing_layout
from smalto.verify import smt, spec as specs


@pytest.fixture(scope="module")
def tok():
    return load_tokenizers()


@pytest.fixture(scope="module")
def laid_out(tok):
    return _drawing_layout(Vocab.from_tokenizers(tok, sound=(54, 2)), TrainConfig(layout="cells"), tok, "tokens")


def test_each_cell_owns_the_codes_of_its_time_slot_once():
    blocks = slot_codes(54, 2)
    assert len(blocks) == 9 and blocks[1] == tuple(range(12, 24)), "slot 2: frames 6..11, both levels"
    assert sorted(i for b in blocks for i in b) == list(range(108))
    assert SoundConfig().slot_samples // 400 == 6, "a codec frame (400 samples) never straddles two slots"
    with pytest.raises(SmaltoError, match="9 equal time slots"):
        slot_codes(50, 2)


def test_a_sound_in_the_layout_says_each_cell_then_its_slot_and_decodes_to_the_same_codes(tok, laid_out):
    assert laid_out.drawn("audio") == "slots" and laid_out.drawn("image") == "cells"
    assert Vocab.from_json(laid_out.to_json()) == laid_out
    sample = SoundWorld(SoundConfig(), 3, "train")[0]
    codes = tok.audio.encode(sample.wave[None])[0, :2].T  # [frames, levels]
    words = [tok.text.encode(w) for w in cell_words(sample.scene)]
    ids = laid_out.item_ids("slots", codes, words)
    assert ids[0] == laid_out.specials["reserved_0"] and ids[-1] == laid_out.eoa and len(ids) == 2 + 9 * (4 + 12)
    assert ids[1:5] == words[0] and ids[5:17] == laid_out.item_ids("audio", codes)[1:13], "cell 1: its 6 frames"
    assert torch.equal(laid_out.item_codes(ids[1:-1], "slots")[0], codes)
    assert laid_out.item_words(ids[1:-1], "slots") == words


def test_the_stream_draws_sounds_in_the_layout_and_still_reads_them_flat(tok, laid_out):
    mix = TaskMix(caption=0, draw=0, qa=0, sound_draw=1, picture_to_sound=1, sound_caption=1)
    examples = ExampleStream(tok, laid_out, mix=mix, seed=5, max_len=384).examples(0, 30)
    opened = laid_out.specials["reserved_0"]
    made = [e for _, e in examples if opened in e.ids]
    heard = [e for _, e in examples if opened not in e.ids]
    assert made and heard and all(laid_out.boa in e.ids for e in heard), "a sound read is written as itself"
    for e in made:
        start = e.ids.index(opened)
        body = e.ids[start + 1:start + 1 + 9 * 16]
        assert e.ids[start + 1 + 9 * 16] == laid_out.eoa and all(e.loss_mask[start:start + 146])
        said = [tok.text.decode(w) for w in laid_out.item_words(body, "slots")]
        assert all(w.startswith(str(k + 1)) for k, w in enumerate(said)), said


def test_decoding_writes_the_lexicons_words_and_each_levels_codes_in_its_slot(tok, laid_out):
    torch.manual_seed(0)
    model = Transformer(preset("shapes-micro", laid_out.size, max_seq_len=384)).eval()
    prompt = draw_prompt(laid_out, tok.text.encode("a small red circle at the center"), "audio")
    row = Engine(model, laid_out).generate([prompt], 147, Sampling(1.0, seed=2), Allowed(text=False))[0]
    body, m = row.tokens[:-1], laid_out.modalities["slots"]
    assert row.tokens[-1] == laid_out.eoa and len(body) == m.tokens == 144
    for block in range(9):
        chunk = body[block * 16:block * 16 + 16]
        assert all(t in ids for t, ids in zip(chunk[:4], m.lexicon[block])), "each word from its cell's lexicon"
        for k in range(12):
            assert laid_out.level_span("audio", k % 2)[0] <= chunk[4 + k] < laid_out.level_span("audio", k % 2)[1]
    assert laid_out.item_codes(body, "slots").shape == (1, 54, 2)


def test_a_pipeline_makes_sounds_in_the_layout_with_the_plans_words_when_asked(tok, laid_out):
    torch.manual_seed(0)
    pipe = Pipeline(Transformer(preset("shapes-micro", laid_out.size, max_seq_len=384)).eval(), laid_out, tok,
                    sounds=True)
    made = pipe.generate("a small red circle at the center", n=2, modality="audio", seed=1)
    assert [w.shape for w in made] == [(21600,)] * 2
    assert pipe.sound_of(ShapesWorld()[0].image)[0].shape == (21600,)
    scene = ShapesWorld(seed=1)[0].scene
    forced = pipe.forced_words([cell_words(scene)], "audio")[0]
    assert len(forced) == 144 and forced[:4] == tok.text.encode(cell_words(scene)[0]) and forced[4] is None


def test_a_layout_the_sound_can_not_take_is_refused_naming_why(tok):
    delayed = Vocab.from_tokenizers(tok, sound=(54, 4), pattern="delay")
    with pytest.raises(SmaltoError, match="levels flat"):
        _drawing_layout(delayed, TrainConfig(layout="cells"), tok, "tokens")
    with pytest.raises(SmaltoError, match="reserved_0"):
        _drawing_layout(Vocab.from_tokenizers(tok, sound=(54, 2)), TrainConfig(layout="cells"), tok, "xattn")
    pictures = _drawing_layout(Vocab.from_tokenizers(tok), TrainConfig(layout="cells"), tok, "xattn")
    assert pictures.drawn("image") == "cells" and pictures.drawn("audio") == "audio"
    with pytest.raises(ValueError, match="opening token of its own"):
        Vocab.from_tokenizers(tok, sound=(54, 2)).with_layout("again", "audio", slot_codes(54, 2), 4, (),
                                                               "boa")


def test_a_checkpoint_drawing_sounds_in_the_layout_keeps_it_when_its_levels_change(tok, laid_out, tmp_path):
    from smalto.checkpoint import save_checkpoint
    from smalto.training.trainer import _new_model

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "slots", Transformer(preset("shapes-micro", laid_out.size, max_seq_len=384)),
                    laid_out, tok, extra={"step": 0})
    _, wider, _ = _new_model(TrainConfig(init_from=str(tmp_path / "slots"), sound_levels=3,
                                         mix=TaskMix(sound_caption=1)))
    assert wider.sound == (54, 3) and wider.drawn("audio") == "slots"
    assert wider.modalities["slots"].blocks == slot_codes(54, 3) and wider.modalities["slots"].levels == 3
    with pytest.raises(SmaltoError, match="writes their levels flat"):
        _new_model(TrainConfig(init_from=str(tmp_path / "slots"), sound_pattern="delay", mix=TaskMix(sound_caption=1)))
    assert wider.modalities["slots"].lexicon == laid_out.modalities["slots"].lexicon, "the same words"


def test_sounds_drawn_with_effort_are_planned_and_judged_by_the_sound_verifier(tok, laid_out):
    torch.manual_seed(0)
    pipe = Pipeline(Transformer(preset("shapes-micro", laid_out.size, max_seq_len=384)).eval(), laid_out, tok,
                    sounds=True)
    prompt = "a small red circle left of a large blue square"
    d, = pipe.drawings(prompt, effort="medium", modality="audio", seed=3)
    assert d.image.shape == (21600,) and d.candidates > 1 and d.verdict is not None
    assert d.prompt != prompt and " at the " in d.prompt, "drawn from the solver's absolute plan"
    heard = pipe.read_scene(d.image, "audio")
    assert d.verdict == smt.check(specs.parse_prompt(prompt), heard), "the verdict is the sound verifier's"
    assert d.reading == (captions(heard)[0] if heard.objects else "no object the verifier can read")
    with pytest.raises(SmaltoError, match="pictures or sounds"):
        pipe.drawings(prompt, modality="video")


def test_the_cli_makes_a_planned_sound_and_says_what_the_verifier_hears_and_the_verdict(tmp_path):
    import subprocess
    import sys

    from smalto.data.gate import read_sound
    from smalto.verify.hearing import parse_sound

    out = tmp_path / "planned.wav"
    prompt = "a small red circle left of a large blue square"
    r = subprocess.run([sys.executable, "-m", "smalto", "generate", "--audio", prompt, "--effort", "medium",
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    heard = parse_sound(read_sound(out, "planned.wav", 16000))
    verdict = smt.check(specs.parse_prompt(prompt), heard)
    line = r.stdout.splitlines()[0]
    assert line.startswith(f"sound 1: the verifier hears {captions(heard)[0]!r}, which "), line
    assert ("satisfies the prompt" in line) == verdict.satisfied and "(best of 4); planned as 'a " in line
