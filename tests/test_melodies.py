"""Melodies to continue (`data.melodies`): their rules, their truth heard back exactly, the
training task and every interface that continues a sound."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from smalto.data.melodies import GIVEN, SLOTS, MelodyWorld, continuation
from smalto.data.shapes import Obj, Scene
from smalto.data.sounds import SoundConfig, write_wav
from smalto.errors import SmaltoError
from smalto.format import Vocab
from smalto.model import Transformer, preset
from smalto.pipeline import Pipeline
from smalto.tokenizers import load_tokenizers
from smalto.training.data import ExampleStream, TaskMix
from smalto.verify.hearing import parse_sound


@pytest.fixture(scope="module")
def tok():
    return load_tokenizers()


def test_every_melody_follows_its_rule_from_its_first_four_notes_and_is_heard_exactly():
    world = MelodyWorld(seed=2)
    rules = set()
    for i in range(60):
        m, notes = world[i], world[i].notes()
        rules.add((m.rule, m.period))
        assert notes[0] is not None, "a melody starts on a note"
        if m.rule == "motif":
            assert len(set(notes[:m.period])) == m.period <= 3, "a motif's notes differ, so its period shows"
            assert all(notes[k] == notes[k - m.period] for k in range(m.period, SLOTS))
        else:
            colours = [world.cfg.world.colors.index(n[1]) for n in notes]
            assert len({(b - a) % 6 for a, b in zip(colours, colours[1:])}) == 1 and len({n[::2] for n in notes}) == 1
        assert parse_sound(world.wave(i), world.cfg) == m.scene
    assert rules == {("motif", 1), ("motif", 2), ("motif", 3), ("scale", 6)}
    assert min(GIVEN) >= 4, "four notes show every rule"


def test_a_continuation_is_judged_on_the_slots_after_the_given_ones_only():
    truth = Scene(tuple(Obj(k // 3, k % 3, "circle", "red", "small") for k in range(9)))
    wrong_start = Scene(tuple(Obj(k // 3, k % 3, "circle", "blue" if k < 5 else "red", "small") for k in range(9)))
    wrong_end = Scene(tuple(Obj(k // 3, k % 3, "circle", "red", "small") for k in range(8)))
    assert continuation(truth, wrong_start, 5) and not continuation(truth, wrong_end, 5)


def test_the_stream_continues_melody_i_from_four_to_six_of_its_notes(tok):
    vocab = Vocab.from_tokenizers(tok, sound=(54, 2))
    examples = ExampleStream(tok, vocab, mix=TaskMix(caption=0, draw=0, qa=0, sound_next=1), seed=6,
                             max_len=384).examples(0, 12)
    codes = tok.audio.encode(MelodyWorld(SoundConfig(), 6).waves_of(range(12)))[:, :2].transpose(1, 2)
    givens = set()
    for i, (_, e) in enumerate(examples):
        start = e.ids.index(vocab.boa)
        assert e.ids[start:start + 110] == vocab.item_ids("audio", codes[i]) and e.ids[-1] == vocab.eos
        given, rest = divmod(110 - sum(e.loss_mask), 12)  # (a slot is 6 frames of 2 codes; <eoa>, <eos> trained)
        end = start + 1 + 12 * given
        assert rest == 0 and not any(e.loss_mask[:end]) and all(e.loss_mask[end:])
        givens.add(given)
    assert givens <= set(GIVEN) and len(givens) > 1


def test_a_pipeline_continues_a_sound_from_its_length_or_from_the_seconds_given(tok):
    vocab = Vocab.from_tokenizers(tok, sound=(54, 2))
    torch.manual_seed(0)
    pipe = Pipeline(Transformer(preset("shapes-micro", vocab.size, max_seq_len=384)).eval(), vocab, tok, sounds=True)
    start = MelodyWorld(SoundConfig(), 1).wave(0)[:5 * 2400]
    made, again = pipe.continue_sound(start), pipe.continue_sound(np.concatenate([start, start[:2400]]), given=0.75)
    assert made[0].shape == (21600,) and np.array_equal(made[0], again[0]), "0.75 s given either way"
    with pytest.raises(SmaltoError, match=r"sound 1: 0.01 s to continue from; give 0.025 to 1.32 s"):
        pipe.continue_sound(start[:200])
    with pytest.raises(SmaltoError, match="given must be a number of seconds"):
        pipe.continue_sound(start, given=-1.0)


def test_the_cli_continues_a_sound_and_says_what_the_verifier_hears(tmp_path):
    start = MelodyWorld(SoundConfig(), 3).wave(0)[:5 * 2400]
    write_wav(tmp_path / "start.wav", start, 16000)
    done = subprocess.run([sys.executable, "-m", "smalto", "continue", str(tmp_path / "start.wav"), "--out",
                           str(tmp_path / "next.wav")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "sound 1: the verifier hears" in done.stdout and (tmp_path / "next.wav").stat().st_size > 40000
    refused = subprocess.run([sys.executable, "-m", "smalto", "continue", str(tmp_path / "start.wav"), "--out",
                              str(tmp_path / "next.gif")], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "a sound is written as .wav" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.fixture(scope="module")
def laid_out(tok):
    from smalto.training.trainer import TrainConfig, _drawing_layout

    return _drawing_layout(Vocab.from_tokenizers(tok, sound=(54, 2)), TrainConfig(layout="cells"), tok, "tokens")


def test_in_the_cells_layout_a_melody_is_heard_from_its_start_and_made_whole_words_first(tok, laid_out):
    from smalto.data.shapes import cell_words

    examples = ExampleStream(tok, laid_out, mix=TaskMix(caption=0, draw=0, qa=0, sound_next=1), seed=6,
                             max_len=384).examples(0, 8)
    world, opened = MelodyWorld(SoundConfig(), 6), laid_out.specials["reserved_0"]
    full = tok.audio.encode(world.waves_of(range(8)))[:, :2].transpose(1, 2)
    for i, (_, e) in enumerate(examples):
        heard = e.ids[e.ids.index(laid_out.boa):e.ids.index(laid_out.eoa) + 1]
        codes = laid_out.item_codes(heard[1:-1], "audio")[0]
        wave = world.wave(i)
        starts = [tok.audio.encode(np.where(np.arange(21600) < g * 2400, wave, 0)[None])[0, :2].T for g in GIVEN]
        assert any(torch.equal(codes, start) for start in starts), "the first 4 to 6 notes heard, the rest silent"
        start = e.ids.index(opened)
        words = [tok.text.encode(w) for w in cell_words(world[i].scene)]
        assert e.ids[start:] == laid_out.item_ids("slots", full[i], words) + [laid_out.eos], "the whole melody"
        assert all(e.loss_mask[start:]) and not any(e.loss_mask[:start]), "trained: the answer, not the start heard"


def test_a_layout_pipeline_continues_a_sound_by_remaking_it_whole(tok, laid_out):
    torch.manual_seed(0)
    pipe = Pipeline(Transformer(preset("shapes-micro", laid_out.size, max_seq_len=384)).eval(), laid_out, tok,
                    sounds=True)
    start = MelodyWorld(SoundConfig(), 1).wave(0)[:5 * 2400]
    made = pipe.continue_sound(start, n=2, temperature=1.0, seed=4)
    assert [w.shape for w in made] == [(21600,)] * 2 and not np.array_equal(made[0], made[1])
    assert np.array_equal(pipe.continue_sound(start)[0], pipe.continue_sound(start)[0])
