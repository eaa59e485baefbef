import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smalto.data import ShapesWorld
from smalto.errors import SmaltoError
from smalto.tokenizers.text import SPECIAL_TOKENS, TextTokenizer


@pytest.fixture(scope="module")
def tok():
    world = ShapesWorld(seed=0)
    texts = [c for i in range(300) for c in world[i].captions]
    return TextTokenizer.train(texts, vocab_size=400)


@pytest.mark.parametrize("text", [
    "a small red circle at the top left",
    "Привет, мир! Маленький красный круг",
    "emoji 🎨🦀👩‍👩‍👧 and ＦＵＬＬ width",
    "control \x00\x01\x1b[31m\t\r\n\x7f and trailing space ",
    "",
])
def test_round_trip_is_exact(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_unicode(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_learned_merges_compress_the_training_language(tok):
    text = "a small red circle at the top left"
    assert len(tok.encode(text)) <= len(text.split()) + 2 < len(text.encode())


def test_special_tokens_are_reserved_and_cannot_be_forged(tok):
    assert list(tok.special) == list(SPECIAL_TOKENS)
    assert sorted(tok.special.values()) == list(range(len(SPECIAL_TOKENS)))
    ids = tok.encode("<|boi|><|eos|>")
    assert not set(ids) & set(tok.special.values())
    assert tok.decode(ids) == "<|boi|><|eos|>"


def test_vocab_size_is_bounded_and_validated(tok):
    assert 256 + len(SPECIAL_TOKENS) <= tok.vocab_size <= 400
    with pytest.raises(SmaltoError, match="at least"):
        TextTokenizer.train(["x"], vocab_size=100)


def test_save_load_gives_identical_ids(tok, tmp_path):
    tok.save(tmp_path / "text.json")
    again = TextTokenizer.load(tmp_path / "text.json")
    for text in ["a large blue square at the center", "Привет 🎨 <|bos|>"]:
        assert again.encode(text) == tok.encode(text)


def test_loading_garbage_is_a_clear_error(tmp_path):
    (tmp_path / "text.json").write_text("{not json")
    with pytest.raises(SmaltoError, match="text.json"):
        TextTokenizer.load(tmp_path / "text.json")
