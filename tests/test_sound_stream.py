"""Sounds in the token stream: <boa> frames' levels <eoa>, each level's codes from its own part of
the audio range; the grammar that decodes them; the sound tasks of the training stream; a model
that grows the range; and every interface reading and making sounds."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from smalto.data.shapes import ShapesWorld
from smalto.data.sounds import SoundConfig, SoundWorld, write_wav
from smalto.data.tasks import SOUND_TASKS, TASKS
from smalto.errors import SmaltoError
from smalto.format import Allowed, Carrying, FormatState, Modality, Span, Vocab, positions
from smalto.inference import Engine, Sampling
from smalto.model import ModelConfig, Transformer, preset
from smalto.pipeline import Message, Pipeline
from smalto.tokenizers import load_tokenizers
from smalto.tokenizers.text import SPECIAL_TOKENS, TextTokenizer
from smalto.training.data import ExampleStream, TaskMix

SPECIALS = {t.removeprefix("<|").removesuffix("|>"): i for i, t in enumerate(SPECIAL_TOKENS)}
SOUND = Modality("audio", (3, 2), "boa", "eoa", levels=2)  # 3 frames of 2 levels, 8 codes a level
V = Vocab({"text": Span(0, 40), "image": Span(40, 16), "audio": Span(56, 16)}, SPECIALS,
          {"image": Modality("image", (2, 2), "boi", "eoi"), "audio": SOUND})
CODES = torch.tensor([[1, 7], [0, 3], [5, 5]])  # [frames, levels]


def test_a_sound_is_written_frame_by_frame_each_level_from_its_own_part_of_the_range():
    ids = V.item_ids("audio", CODES)
    assert ids == [V.boa, 57, 71, 56, 67, 61, 69, V.eoa], "level 0 from 56..63, level 1 from 64..71"
    assert torch.equal(V.item_codes(ids[1:-1], "audio")[0], CODES)
    assert V.sound == (3, 2) and Vocab.from_json(V.to_json()) == V
    assert positions(V, ids)[0].tolist() == list(range(8))
    with pytest.raises(ValueError, match="residual levels"):
        Vocab({"text": Span(0, 40), "audio": Span(40, 15)}, SPECIALS, {"audio": SOUND})


def test_the_grammar_allows_each_level_only_its_own_codes_and_cached_decoding_is_the_full_forward_pass():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=V.size, dim=32, n_layers=2, n_heads=2, n_kv_heads=1, mlp_hidden=64,
                                    max_seq_len=64)).eval()
    prompt = [V.bos, V.user, 20, V.assistant, V.boa]
    for seed in range(4):
        row = Engine(model, V).generate([prompt], 8, Sampling(1.5, seed=seed), Allowed(text=False))[0]
        body = row.tokens[:-1]
        assert row.tokens[-1] == V.eoa and len(body) == 6
        assert all(56 <= t < 64 for t in body[0::2]) and all(64 <= t < 72 for t in body[1::2])
        full = prompt + row.tokens
        logits = model(torch.tensor([full]), positions(V, full)[None]).logits[0, len(prompt) - 1:-1]
        legal = FormatState(V, [prompt], Allowed(text=False))
        expected = []
        for t, step in zip(row.tokens, logits):
            expected.append(step.masked_fill(~legal.mask()[0], float("-inf")).log_softmax(-1)[t])
            legal.advance(torch.tensor([t]))
        torch.testing.assert_close(torch.tensor(row.logprobs), torch.stack(expected), atol=1e-4, rtol=1e-4)


DELAYED = Vocab(V.ranges, SPECIALS, {"image": V.modalities["image"],
                                     "audio": Modality("audio", (3, 2), "boa", "eoa", levels=2, pattern="delay")})


def test_a_delayed_sound_takes_a_step_a_frame_each_carrying_the_finer_level_of_the_frame_before():
    ids = DELAYED.item_ids("audio", CODES)
    assert list(ids) == [V.boa, 57, 56, 61, 69, V.eoa], "level 0 of frames 0, 1, 2, then level 1 of frame 2"
    assert ids.extra == [[-1, -1], [-1, -1], [-1, 71], [-1, 67], [-1, -1], [-1, -1]], "level 1 of frames 0, 1"
    assert torch.equal(DELAYED.item_codes(ids[1:-1], "audio", ids[1:-1].extra)[0], CODES)
    assert Vocab.from_json(DELAYED.to_json()) == DELAYED and DELAYED.width == 2
    prompt = [V.bos, V.user] + ids + [V.assistant]
    assert prompt.extra[2:8] == ids.extra and prompt.extra[0] == [-1, -1], "`+` keeps what the tokens carry"
    with pytest.raises(ValueError, match="without the codes they carry"):
        DELAYED.carried(list(prompt))


@pytest.mark.parametrize("guidance", [None, 2.0])
def test_a_delayed_step_picks_each_carried_code_among_its_levels_ids_and_caches_as_the_full_forward_pass(guidance):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=V.size, dim=32, n_layers=2, n_heads=2, n_kv_heads=1, mlp_hidden=64,
                                    max_seq_len=64)).eval()
    engine = Engine(model, DELAYED)
    heard = [V.bos, V.user] + DELAYED.item_ids("audio", CODES) + [V.assistant, V.boa]
    for prompt in ([V.bos, V.user, 20, V.assistant, V.boa], heard):
        row = engine.generate([prompt], 5, Sampling(1.5, seed=1, guidance=guidance), Allowed(text=False),
                              unconditional=[[V.bos, V.user, V.assistant, V.boa]] if guidance else None)[0]
        assert row.tokens[-1] == V.eoa and len(row.tokens) == 5
        assert [56 <= t < 64 for t in row.tokens[:3]] == [True] * 3 and 64 <= row.tokens[3] < 72
        assert [[k >= 0 for k in r] for r in row.extra[:4]] == [[False, False], [False, True], [False, True],
                                                               [False, False]]
        assert all(64 <= r[1] < 72 for r in row.extra[1:3])
        if guidance:
            continue
        full = prompt + Carrying(row.tokens, row.extra)
        logits = model(torch.tensor([list(full)]), positions(DELAYED, full)[None],
                       extra=torch.tensor([full.extra])).logits[0, len(prompt) - 1:-1]
        state, expected = FormatState(DELAYED, [prompt], Allowed(text=False)), []
        for t, carried, step in zip(row.tokens, row.extra, logits):
            lp = step.masked_fill(~state.mask()[0], float("-inf")).log_softmax(-1)[t]
            for k, c in enumerate(carried):
                if c >= 0:
                    lp = lp + step.masked_fill(~state.extra_mask()[0, k], float("-inf")).log_softmax(-1)[c]
            expected.append(lp)
            state.advance(torch.tensor([t]))
        torch.testing.assert_close(torch.tensor(row.logprobs), torch.stack(expected), atol=1e-4, rtol=1e-4)


def test_tokenizers_and_checkpoints_from_before_the_audio_tokens_had_names_load_with_them(tmp_path):
    shipped = load_tokenizers().text
    old = tmp_path / "text.json"
    old.write_text(shipped.tokenizer.to_str().replace('"<|boa|>"', '"<|reserved_2|>"')
                   .replace('"<|eoa|>"', '"<|reserved_3|>"'))
    assert TextTokenizer.load(old).special == shipped.special
    pictures = Vocab({"text": V.ranges["text"], "image": V.ranges["image"]}, V.specials,
                     {"image": V.modalities["image"]})
    stored = pictures.to_json()
    old_names = {"boa": "reserved_2", "eoa": "reserved_3"}
    stored["specials"] = {old_names.get(k, k): i for k, i in stored["specials"].items()}
    assert Vocab.from_json(stored) == pictures


@pytest.fixture(scope="module")
def tok():
    return load_tokenizers()


@pytest.fixture(scope="module")
def heard(tok):
    return Vocab.from_tokenizers(tok, sound=(54, 2))


def test_the_stream_hears_scene_i_of_its_world_and_pairs_it_with_its_picture(tok, heard):
    scenes = set(SOUND_TASKS) - {"sound_next"}  # (a melody to continue is no scene: tests/test_melodies.py)
    mix = TaskMix(caption=0, draw=0, qa=0, **{t: 1 for t in scenes})
    stream = ExampleStream(tok, heard, mix=mix, seed=4, max_len=384)
    examples = stream.examples(0, 60)
    assert {TASKS[t] for t, _ in examples} == scenes
    assert [e.ids for _, e in examples[:6]] == [e.ids for _, e in stream.examples(0, 6)]
    waves = SoundWorld(SoundConfig(), 4, "train").waves(0, 60)
    sounds = tok.audio.encode(waves)[:, :2].transpose(1, 2)
    pictures = tok.image.encode(np.stack([ShapesWorld(seed=4)[i].image for i in range(60)]))
    for i, (task, e) in enumerate(examples):
        name = TASKS[task]
        start = e.ids.index(heard.boa)
        assert e.ids[start:start + 110] == heard.item_ids("audio", sounds[i]), name
        if name in ("picture_to_sound", "sound_to_picture"):
            start = e.ids.index(heard.boi)
            assert e.ids[start:start + 66] == heard.image_ids(pictures[i]), name
        trained = [t for t, m in zip(e.ids, e.loss_mask) if m]
        if name in ("sound_draw", "picture_to_sound"):
            assert trained[-111:] == heard.item_ids("audio", sounds[i]) + [heard.eos], "the sound is the answer"
            assert len(trained) == 111 + 65 * (name == "picture_to_sound"), "and the picture read: its codes, <eoi>"


def test_a_delayed_stream_carries_each_steps_finer_levels_and_trains_on_them(tok):
    from smalto.training.data import collate
    from smalto.training.trainer import token_losses

    delayed = Vocab.from_tokenizers(tok, sound=(54, 4), pattern="delay")
    examples = ExampleStream(tok, delayed, mix=TaskMix(caption=0, draw=0, qa=0, sound_draw=1), seed=2,
                             max_len=384).examples(0, 4)
    sounds = tok.audio.encode(SoundWorld(SoundConfig(), 2, "train").waves(0, 4)).transpose(1, 2)
    for (_, e), codes in zip(examples, sounds):
        start = e.ids.index(delayed.boa)
        assert len(e.ids) - start == 57 + 3, "54 frames + 3 steps of delay, <eoa>, <eos>"
        body = e.ids[start + 1:start + 58]
        assert torch.equal(delayed.step_codes("audio", body, e.extra[start + 1:start + 58]), codes)
    batch = collate(examples, delayed.pad, 384)
    carried = int(((batch.extra_targets >= 0) & batch.mask[..., None]).sum())
    assert carried == 4 * (54 * 4 - 57), "every code but the steps' own is carried, and trained"
    assert batch.tokens == int(batch.mask.sum()) + carried
    logits = torch.zeros(*batch.targets.shape, delayed.size)
    spans = [delayed.level_span("audio", k) for k in range(4)]
    loss, stats = token_losses(logits, batch.targets, batch.mask, batch.tasks, batch.extra_targets, spans)
    expected = int(batch.mask.sum()) * math.log(delayed.size) + carried * math.log(256)
    assert float(loss) == pytest.approx(expected, rel=1e-5) and int(stats[0]) == batch.tokens


def test_a_model_without_sounds_grows_the_audio_range_and_keeps_what_it_knew(micro_base, tmp_path):
    from smalto.checkpoint import load_checkpoint, save_checkpoint
    from smalto.training.trainer import TrainConfig, _new_model

    base, vocab, _, _ = load_checkpoint(micro_base)
    cfg = TrainConfig(init_from=str(micro_base), sound_levels=2, context=384, mix=TaskMix(sound_caption=1))
    grown, grown_vocab, _ = _new_model(cfg)
    assert grown_vocab.sound == (54, 2) and grown_vocab.size == vocab.size + 512
    ids = torch.tensor([[vocab.bos, vocab.user, 30, 31, vocab.assistant]])
    torch.testing.assert_close(grown(ids).logits[..., :vocab.size], base(ids).logits)
    save_checkpoint(tmp_path / "heard", grown, grown_vocab, load_tokenizers(), extra={"step": 0})
    wider, wider_vocab, _ = _new_model(TrainConfig(init_from=str(tmp_path / "heard"), sound_levels=4,
                                                   sound_pattern="delay", mix=TaskMix(sound_caption=1)))
    assert wider_vocab.sound == (54, 4) and wider_vocab.pattern == "delay", "levels added at the range's end"
    torch.testing.assert_close(wider(ids).logits[..., :grown_vocab.size], grown(ids).logits)
    with pytest.raises(SmaltoError, match="sound tasks hear ShapesWorld"):
        ExampleStream(load_tokenizers(), grown_vocab, str(tmp_path), TaskMix(sound_caption=1), max_len=384)


@pytest.fixture(scope="module")
def pipe(tok, heard):
    torch.manual_seed(0)
    return Pipeline(Transformer(preset("shapes-micro", heard.size, max_seq_len=384)).eval(), heard, tok, sounds=True)


def test_the_pipeline_reads_and_makes_sounds_through_its_codec(pipe, tmp_path):
    wave = SoundWorld(SoundConfig(), 0, "train")[0].wave
    path = tmp_path / "scene.wav"
    write_wav(path, wave, 16000)
    assert list(pipe.codecs)[0] == "audio" and pipe.sound_seconds == 1.35
    prompt = pipe.caption_prompts([path])[0]
    assert prompt[2:2 + 110] == pipe.vocab.item_ids("audio", pipe.codecs["audio"].encode(pipe.sound_waves([path]))[0])
    made = pipe.generate("a small red circle at the center", n=2, modality="audio", seed=1)
    assert [w.shape for w in made] == [(21600,)] * 2 and made[0].dtype == np.float32
    assert np.array_equal(made[0], pipe.generate("a small red circle at the center", n=2, modality="audio",
                                                 seed=1)[0])
    assert pipe.picture_of(path)[0].shape == (32, 32, 3) and pipe.sound_of(ShapesWorld()[0].image)[0].shape == (21600,)


def test_a_delayed_pipeline_hears_and_makes_sounds_of_all_four_levels(tok):
    delayed = Vocab.from_tokenizers(tok, sound=(54, 4), pattern="delay")
    torch.manual_seed(0)
    pipe = Pipeline(Transformer(preset("shapes-micro", delayed.size, max_seq_len=256)).eval(), delayed, tok,
                    sounds=True)
    wave = SoundWorld(SoundConfig(), 0, "train")[0].wave
    prompt = pipe.caption_prompts([wave])[0]
    codec = pipe.codecs["audio"]
    assert len(prompt) == 2 + 59 + 1 and prompt.extra == delayed.carried(prompt)
    assert torch.equal(delayed.step_codes("audio", prompt[3:60], prompt.extra[3:60]), codec.encode(wave[None])[0])
    made = pipe.generate("a small red circle at the center", modality="audio", seed=3)[0]
    assert made.shape == (21600,) and pipe.sound_of(ShapesWorld()[0].image)[0].shape == (21600,)
    chat = pipe.chat_prompt([Message("user", "what do you hear?", images=[wave])])
    assert chat.extra[3:60] == prompt.extra[3:60], "a sound in a conversation carries its levels too"


def test_sounds_a_model_cannot_take_are_refused_naming_them(pipe, tok, tmp_path):
    long = tmp_path / "long.wav"
    write_wav(long, np.zeros(16000 * 2, np.float32), 16000)
    with pytest.raises(SmaltoError, match="long.wav: 2.00 s long; this model hears sounds of up to 1.35 s"):
        pipe.caption(long)
    with pytest.raises(SmaltoError, match="not finite"):
        pipe.caption(np.full(100, np.nan, np.float32))
    with pytest.raises(SmaltoError, match="one kind of item"):
        pipe.caption_batch([long, ShapesWorld()[0].image])
    with pytest.raises(SmaltoError, match="not a conversion"):
        pipe.convert([long], "video")
    deaf = Pipeline(Transformer(preset("shapes-micro", Vocab.from_tokenizers(tok).size)).eval(),
                    Vocab.from_tokenizers(tok), tok)
    with pytest.raises(SmaltoError, match="was not trained on sounds"):
        deaf.caption(long)
    with pytest.raises(SmaltoError, match="was not trained on sounds"):
        deaf.generate("a small red circle at the center", modality="audio")


def test_the_cli_writes_the_sound_it_made_and_says_what_the_verifier_hears_in_it(tmp_path):
    import subprocess
    import sys

    from smalto.data.gate import read_sound
    from smalto.data.shapes import captions
    from smalto.verify.hearing import parse_sound

    out = tmp_path / "heard.wav"
    r = subprocess.run([sys.executable, "-m", "smalto", "convert", "examples/two-objects.png", "--out", str(out)],
                       capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr
    scene = parse_sound(read_sound(out, "heard.wav", 16000))
    heard = captions(scene)[0] if scene.objects else "silence"
    assert r.stdout.splitlines()[0] == f"sound 1: the verifier hears {heard!r}"
    again = subprocess.run([sys.executable, "-m", "smalto", "convert", "examples/two-objects.png", "--out", str(out)],
                           capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert again.returncode != 0 and "already exists" in again.stderr and "Traceback" not in again.stderr
