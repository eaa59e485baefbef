"""ShapesWorld's sounds, their verifier, and the audio codec (causal, residual VQ)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile
import torch

from smalto.apps.cli import main
from smalto.data.shapes import Obj, Scene, ShapesWorld
from smalto.data.sounds import PITCHES, SoundConfig, SoundWorld, render_sound
from smalto.errors import SmaltoError
from smalto.tokenizers.audio import AudioCodec, AudioCodecConfig
from smalto.tokenizers.quantize import ResidualVQ
from smalto.training.audio_tokenizer import si_sdr, stft_loss
from smalto.verify.hearing import parse_sound

CFG = SoundConfig()


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_the_verifier_reads_every_rendered_sound_exactly(split):
    world = SoundWorld(seed=3, split=split)
    wrong = [i for i in range(150) if parse_sound(world[i].wave) != world[i].scene]
    assert wrong == []


def test_a_sound_is_its_pictures_scene_and_stays_in_range():
    sounds, pictures = SoundWorld(seed=9), ShapesWorld(seed=9)
    for i in range(20):
        s = sounds[i]
        assert s.scene == pictures[i].scene and s.captions == pictures[i].captions
        assert s.wave.shape == (CFG.samples,) and s.wave.dtype == np.float32
        assert 0.1 < np.abs(s.wave).max() < 1.0
        np.testing.assert_array_equal(s.wave, sounds[i].wave)  # a pure function of (seed, split, index)


ONE = Scene((Obj(1, 2, "square", "purple", "large"),))


@pytest.mark.parametrize("change", [dict(color="yellow"), dict(color="cyan"), dict(shape="circle"),
                                    dict(shape="triangle"), dict(size="small"), dict(row=0), dict(col=0)])
def test_the_verifier_tells_each_corruption_from_the_truth(change):
    corrupted = Scene((replace(ONE.objects[0], **change),))
    heard = parse_sound(render_sound(corrupted, CFG, np.random.default_rng(0)))
    assert heard == corrupted and heard != ONE


def test_silence_an_added_note_and_a_cut_sound_are_heard_as_such():
    assert parse_sound(np.zeros(CFG.samples)) == Scene(())
    two = Scene((*ONE.objects, Obj(0, 0, "circle", "red", "small")))
    assert parse_sound(render_sound(two, CFG)) == two
    # a sound cut after its first three cells holds only what they hold
    assert parse_sound(render_sound(two, CFG)[:3 * CFG.slot_samples]) == Scene((two.objects[0],))


def test_pitches_lie_within_an_octave_so_no_harmonic_is_a_note():
    assert max(PITCHES.values()) < 2 * min(PITCHES.values())


def test_a_world_without_a_pitch_for_a_colour_is_refused():
    from smalto.data.shapes import ShapesConfig

    with pytest.raises(SmaltoError, match="diamond"):
        SoundConfig(world=ShapesConfig(shapes=("circle", "diamond"), heldout=()))


TINY = AudioCodecConfig(width=4, latent_dim=8, levels=3, codebook_size=16)


def test_the_codec_is_causal_in_encoding_and_in_decoding():
    torch.manual_seed(0)
    codec = AudioCodec(TINY)
    hop = TINY.hop
    x = SoundWorld(seed=1).waves(0, 2)
    codec(torch.tensor(x))  # a training step's forward seeds the codebooks
    codec.eval()
    cut = 10 * hop + 123  # a frame's codes see samples up to its own end
    y = x.copy()
    y[:, cut:] = np.random.default_rng(0).uniform(-1, 1, size=y[:, cut:].shape)
    with torch.no_grad():  # the latent frames the codes are read from, frame by frame
        za, zb = (codec.encoder(torch.tensor(w)[:, None]) for w in (x, y))
    assert torch.equal(za[..., :cut // hop], zb[..., :cut // hop]) and not torch.equal(za, zb)
    a = codec.encode(x)
    assert a.shape == (2, TINY.levels, x.shape[1] // hop)
    changed = a.clone()
    changed[..., 20:] = (changed[..., 20:] + 1) % TINY.codebook_size
    wa, wb = codec.decode(a), codec.decode(changed)
    np.testing.assert_array_equal(wa[:, :20 * hop], wb[:, :20 * hop])
    assert not np.array_equal(wa, wb)


def test_residual_levels_each_refine_the_last():
    torch.manual_seed(0)
    rvq = ResidualVQ(8, levels=4, codebook_size=32)
    z = torch.randn(2048, 8)
    for _ in range(30):  # the codebooks are running means (EMA k-means): no optimiser
        rvq(z)
    rvq.eval()
    with torch.no_grad():
        out = rvq(z)
        assert out.codes.shape == (2048, 4)
        torch.testing.assert_close(rvq.codes_to_z(out.codes), out.z_q)
        errors = [float((rvq.codes_to_z(out.codes[:, :k]) - z).pow(2).mean()) for k in range(1, 5)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0]


def test_the_codec_saves_and_loads_to_the_same_codes(tmp_path):
    torch.manual_seed(0)
    codec = AudioCodec(TINY).eval()
    x = SoundWorld(seed=2).waves(0, 1)
    codec.save(tmp_path)
    again = AudioCodec.load(tmp_path)
    assert torch.equal(again.encode(x), codec.encode(x))
    (tmp_path / "audio.json").write_text(json.dumps({"levels": 3, "width": 5, "latent_dim": 8, "codebook_size": 16}))
    with pytest.raises(SmaltoError, match="audio.safetensors: does not fit"):
        AudioCodec.load(tmp_path)
    (tmp_path / "audio.json").write_text('{"levels": 0}')
    with pytest.raises(SmaltoError, match="levels"):
        AudioCodec.load(tmp_path)


def test_the_losses_and_si_sdr_measure_what_they_say():
    x = torch.tensor(SoundWorld(seed=4).waves(0, 2))
    assert float(stft_loss(x, x)) == 0.0
    assert float(stft_loss(0.5 * x, x)) > 0.1
    noisy = x + 0.01 * torch.randn_like(x)
    assert float(stft_loss(noisy, x)) < float(stft_loss(torch.zeros_like(x), x))
    a, b = x.numpy(), noisy.numpy()
    cleaner = (x + 0.001 * torch.randn_like(x)).numpy()
    assert (si_sdr(cleaner, a) > si_sdr(b, a) + 15).all() and (si_sdr(b, a) > 5).all()
    assert np.allclose(si_sdr(3 * b, a), si_sdr(b, a), atol=1e-3)  # scale-invariant


def test_data_sounds_writes_wavs_the_verifier_reads_back(tmp_path, capsys):
    out = tmp_path / "sounds"
    main(["data", "sounds", "--out", str(out), "--n", "3", "--seed", "5"])
    assert "wrote 3 sounds" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert [r["audio"] for r in rows] == ["sounds/000001.wav", "sounds/000002.wav", "sounds/000003.wav"]
    for i, row in enumerate(rows):
        wave, rate = soundfile.read(out / row["audio"], dtype="float32")
        assert rate == CFG.sample_rate
        assert parse_sound(wave) == Scene.from_dict(row["scene"]) == ShapesWorld(seed=5)[i].scene
        assert row["text"] == ShapesWorld(seed=5)[i].captions[0]


def test_a_sound_folder_reads_any_rate_and_channels_as_mono_at_the_codecs_rate(tmp_path):
    from smalto.data.folder import is_sound_folder, load_sound_folder

    world = SoundWorld(seed=6)
    (tmp_path / "sounds").mkdir()
    wave = world[0].wave
    stereo = np.stack([wave, wave], axis=1)
    from scipy.signal import resample_poly

    soundfile.write(tmp_path / "sounds/a.flac", resample_poly(stereo, 3, 2, axis=0), 24000)  # 24 kHz stereo FLAC
    (tmp_path / "data.jsonl").write_text(json.dumps({"audio": "sounds/a.flac", "text": world[0].captions[0]}) + "\n")
    assert is_sound_folder(tmp_path)
    folder = load_sound_folder(tmp_path)
    assert folder.sample_rate == 16000 and len(folder.sounds[0]) == len(wave)
    assert parse_sound(folder.sounds[0]) == world[0].scene


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk"), "not a sound file libsndfile can read"),
    (lambda p: soundfile.write(p, np.zeros(16000 * 61, np.float32), 16000), "61.0 s long; the limit is 60 s"),
    (lambda p: soundfile.write(p, np.zeros((100, 9), np.float32), 16000), "declares 9 channels"),
    (lambda p: soundfile.write(p, np.zeros(0, np.float32), 16000), "holds no samples"),
    (lambda p: None, "sound file not found"),
])
def test_a_bad_sound_is_one_line_naming_its_file_and_line(tmp_path, make, message):
    from smalto.data.folder import load_sound_folder

    make(tmp_path / "x.wav")
    (tmp_path / "data.jsonl").write_text('{"audio": "x.wav", "text": "a sound"}\n')
    with pytest.raises(SmaltoError) as e:
        load_sound_folder(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'data.jsonl'}:1: x.wav: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_a_sound_path_outside_the_folder_is_refused(tmp_path):
    from smalto.data.folder import load_sound_folder

    soundfile.write(tmp_path / "outside.wav", np.zeros(100, np.float32), 16000)
    (tmp_path / "d").mkdir()
    (tmp_path / "d/data.jsonl").write_text('{"audio": "../outside.wav", "text": "a sound"}\n')
    with pytest.raises(SmaltoError, match="outside"):
        load_sound_folder(tmp_path / "d")


def test_training_writes_a_codec_the_tokenizers_load_and_continues_from_it(tmp_path):
    from smalto.tokenizers import load_tokenizers
    from smalto.training.audio_tokenizer import AudioTrainConfig, train_audio

    cfg = AudioTrainConfig(steps=8, batch_size=4, unquantised=3, warmup=1, eval_sounds=4, log_every=1, codec=TINY)
    metrics = train_audio(tmp_path / "tok", cfg, progress=False)
    log = [json.loads(line) for line in (tmp_path / "tok/audio_log.jsonl").read_text().splitlines()]
    assert log[-1]["stft"] < log[0]["stft"]
    assert metrics.tokens_per_second == 120 and len(metrics.usage) == 3 and metrics.silence["verifier_agreement"] == 0
    tok = load_tokenizers(tmp_path / "tok")
    assert tok.audio is not None and tok.audio.cfg == TINY and tok.video is not None
    tok.copy_to(tmp_path / "copy")
    assert {"audio.json", "audio.safetensors"} <= {p.name for p in (tmp_path / "copy").iterdir()}
    more = train_audio(tmp_path / "more", AudioTrainConfig(steps=2, batch_size=4, eval_sounds=2), progress=False,
                       init_from=tmp_path / "tok")  # the codec's own config is kept, not the default's
    assert load_tokenizers(tmp_path / "more").audio.cfg == TINY and more.tokens_per_second == 120
    replace(tok, audio=None).copy_to(tmp_path / "pictures-only")
    with pytest.raises(SmaltoError, match="no audio codec to continue"):
        train_audio(tmp_path / "none", cfg, progress=False, init_from=tmp_path / "pictures-only")


def test_a_frame_that_does_not_divide_a_slot_is_refused():
    from smalto.training.audio_tokenizer import sound_config

    with pytest.raises(SmaltoError, match="does not divide"):
        sound_config(AudioCodecConfig(strides=(7, 7)))


def test_the_shipped_codec_round_trips_what_the_verifier_hears_held_out_pairs_included():
    from smalto.tokenizers import load_tokenizers

    codec = load_tokenizers().audio
    world = SoundWorld(seed=4321, split="heldout")  # another seed than its training's and evaluation's
    x = world.waves(0, 40)
    codes = codec.encode(x)
    assert codes.shape == (40, 4, CFG.samples // 400) and codec.cfg.tokens_per_second == 160
    y = codec.decode(codes)
    assert [i for i in range(40) if parse_sound(y[i]) != world.scene(i)] == []
    assert si_sdr(y, x).mean() > 15
    coarse = codec.decode(codes[:, :1])  # the first level alone still carries the scene
    assert sum(parse_sound(coarse[i]) == world.scene(i) for i in range(40)) >= 38


def test_a_codec_taught_speech_takes_half_its_batches_from_spoken_captions_and_is_measured_on_them():
    from smalto.tokenizers import load_tokenizers
    from smalto.training.audio_tokenizer import AudioTrainConfig, crops, sound_config, speech_word_error

    codec = load_tokenizers().audio
    cfg = AudioTrainConfig(speech=0.5, speech_pool=6, batch_size=8, codec=codec.cfg)
    world = SoundWorld(sound_config(cfg.codec), 0, "all")
    batch = next(crops(world, cfg))
    assert batch.shape == (8, 4 * world.cfg.slot_samples)
    notes = [parse_sound(np.concatenate([w.numpy(), np.zeros(5 * world.cfg.slot_samples, np.float32)]))
             for w in batch[:4]]
    assert all(len(n.objects) <= 4 for n in notes), "the first half are crops of ShapesWorld's sounds"
    assert all(float(w.abs().max()) > 0.1 for w in batch[4:]), "the second half are speech"
    by_levels, originals = speech_word_error(codec, 3, 1)
    assert len(by_levels) == codec.cfg.levels and originals == 0.0
    assert min(by_levels) > 20, "the shipped codec, trained on notes, turns speech into tones"
