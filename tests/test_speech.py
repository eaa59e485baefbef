"""Speech: espeak-ng utterances of ShapesWorld captions, and the recogniser that judges spoken words."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smalto.apps.cli import main
from smalto.data.shapes import ShapesWorld
from smalto.data.speech import VOICES, SpeechWorld, speak
from smalto.errors import SmaltoError
from smalto.verify.recogniser import Recogniser, caption_words, word_errors, words


def test_speech_is_the_same_for_the_same_settings_and_differs_by_voice():
    a, b = speak("a small red circle", "en-us", 160, 50), speak("a small red circle", "en-us", 160, 50)
    np.testing.assert_array_equal(a, b)
    other = speak("a small red circle", "en-gb-scotland", 160, 50)
    assert len(a) > 8000 and a.dtype == np.float32 and not np.array_equal(a[:len(other)], other[:len(a)])
    assert len(speak("a small red circle", "en-us", 260, 50)) < 0.8 * len(a)  # faster is shorter


def test_text_that_looks_like_an_option_is_spoken_not_obeyed():
    said = speak("--version", "en-us")  # on stdin, never argv: espeak-ng would print its version
    assert len(said) > 1600 and np.abs(said).max() > 0.05


def test_an_utterance_says_its_scenes_caption_in_a_voice_of_its_split():
    assert not set(VOICES["train"]) & set(VOICES["heldout"])
    world, shapes = SpeechWorld(seed=4, split="unseen"), ShapesWorld(seed=4, split="unseen")
    u = world[2]
    assert u.text == shapes[2].captions[0] and u.scene == shapes[2].scene and u.voice in VOICES["train"]
    assert SpeechWorld(seed=4, voices="heldout").settings(2)[0] in VOICES["heldout"]
    assert world.settings(2) == SpeechWorld(seed=4, split="unseen").settings(2)


def test_without_espeak_ng_speech_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(SmaltoError, match="apt-get install espeak-ng"):
        speak("hello")


def test_word_errors_count_substitutions_deletions_and_insertions():
    assert word_errors([], []) == 0
    assert word_errors("a red circle".split(), "a red circle".split()) == 0
    assert word_errors("a blue circle".split(), "a red circle".split()) == 1
    assert word_errors("a circle".split(), "a red circle".split()) == 1
    assert word_errors("a red red circle at".split(), "a red circle".split()) == 2
    assert words("A large red circle at the top left, a small ...") == \
        ["a", "large", "red", "circle", "at", "the", "top", "left", "a", "small"]


def test_the_shipped_recogniser_hears_unseen_captions_in_new_voices():
    model = Recogniser.load()
    assert model.cfg.vocabulary == caption_words()
    for voices in ("train", "heldout"):
        said = [SpeechWorld(seed=777, split="unseen", voices=voices)[i] for i in range(12)]
        heard = model.transcribe([u.wave for u in said])
        errors = sum(word_errors(words(h), words(u.text)) for h, u in zip(heard, said))
        assert errors / sum(len(words(u.text)) for u in said) < 0.1, (voices, list(zip(heard, said)))


def test_data_speech_writes_a_folder_the_recogniser_transcribes_from_the_cli(tmp_path, capsys):
    out = tmp_path / "speech"
    assert main(["data", "speech", "--out", str(out), "--n", "2", "--seed", "3", "--split", "unseen"]) == 0
    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [ShapesWorld(seed=3, split="unseen")[i].captions[0] for i in range(2)]
    assert main(["data", "check", str(out)]) == 0
    assert "2 sounds" in capsys.readouterr().out
    assert main(["recogniser", "transcribe", str(out / rows[0]["audio"])]) == 0
    heard = capsys.readouterr().out.strip()
    assert word_errors(words(heard), words(rows[0]["text"])) <= 2, heard
    assert main(["recogniser", "transcribe", str(tmp_path / "nothing.wav")]) == 2
    assert "nothing.wav: sound file not found" in capsys.readouterr().err


def test_recogniser_training_lowers_ctc_and_writes_what_loads(tmp_path):
    from smalto.training.recogniser import RecogniserTrainConfig, train_recogniser

    cfg = RecogniserTrainConfig(utterances=48, epochs=4, batch_size=16, eval_utterances=4, width=32, warmup=2)
    metrics = train_recogniser(tmp_path / "rec", cfg, progress=False)
    log = [json.loads(line) for line in (tmp_path / "rec/recogniser_log.jsonl").read_text().splitlines()]
    assert log[-1]["ctc"] < 0.8 * log[0]["ctc"]
    assert metrics.baseline_word_error > 30  # the most frequent caption is a poor transcript of others
    assert Recogniser.load(tmp_path / "rec").cfg.width == 32
    with pytest.raises(SmaltoError, match="already exists"):
        train_recogniser(tmp_path / "rec", cfg, progress=False)
