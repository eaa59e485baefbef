"""Chat: the conversation format, the incremental detokenizer, and Pipeline.chat on the shipped model."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smalto.inference.detok import Detokenizer
from smalto.pipeline import Message
from smalto.data import ShapesWorld
from smalto.errors import SmaltoError
from smalto.format import answer_prompt, caption_prompt, chat_prompt
from smalto.tokenizers import load_tokenizers

TOK = load_tokenizers().text


def streamed(ids: list[int], stop=()) -> tuple[list[str], bool]:
    s = Detokenizer(TOK, stop)
    pieces = [s.push(t) for t in ids]
    if not s.stopped:
        pieces.append(s.finish())
    return pieces, s.stopped


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_streamed_text_is_the_stripped_decoding(text):
    ids = TOK.encode(text)
    pieces, stopped = streamed(ids)
    assert "".join(pieces) == TOK.decode(ids).strip() and not stopped
    assert all("\ufffd" not in p for p in pieces[:-1]) or "\ufffd" in text  # never half a character


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab c", max_size=30), st.text(alphabet="ab c", min_size=1, max_size=4))
def test_stop_strings_cut_before_the_first_match(text, stop):
    pieces, stopped = streamed(TOK.encode(text), [stop])
    expected = text.lstrip()
    if stop in expected:
        assert stopped and "".join(pieces) == expected[:expected.index(stop)]
    else:
        assert "".join(pieces) == expected.rstrip()


def test_a_stop_string_split_across_tokens_is_never_emitted():
    ids = [TOK.encode(ch)[0] for ch in "red circle"]  # one token per character
    pieces, stopped = streamed(ids, ["circ"])
    assert stopped and "".join(pieces) == "red "
    assert all("c" not in p for p in pieces)  # "c" was held back until it was known to start "circ"


def test_multibyte_characters_are_emitted_whole():
    ids = TOK.encode("круг 🎨")
    assert len(ids) > len("круг 🎨")  # byte-level: some characters span several tokens
    pieces, _ = streamed(ids)
    assert "".join(pieces) == "круг 🎨" and not any("\ufffd" in p for p in pieces)


def test_conversation_format_extends_the_trained_one(shipped):
    v, codes = shipped.vocab, torch.arange(64).view(8, 8)
    assert chat_prompt(v, [("user", v.image_ids(codes))]) == caption_prompt(v, codes)
    assert chat_prompt(v, [("user", v.image_ids(codes) + [20, 21])]) == answer_prompt(v, codes, [20, 21])
    two = chat_prompt(v, [("user", [20]), ("assistant", [30]), ("user", [21])])
    assert two == [v.bos, v.user, 20, v.assistant, 30, v.eos, v.user, 21, v.assistant]
    with pytest.raises(ValueError, match="role"):
        chat_prompt(v, [("robot", [1])])


def test_chat_answers_like_ask_and_caption(shipped):
    sample = ShapesWorld(seed=11)[3]
    question = sample.qa[0]["q"]
    assert shipped.chat([Message("user", question, [sample.image])]) == shipped.ask(sample.image, question)
    assert shipped.chat([Message("system", "be brief"), Message("user", "", [sample.image])]) == \
        shipped.caption(sample.image)
    # a follow-up question is in the multi-turn format of `answer_example`
    follow = [Message("user", question, [sample.image]), Message("assistant", sample.qa[0]["a"]),
              Message("user", sample.qa[1]["q"])]
    v, text = shipped.vocab, shipped.tokenizers.text.encode
    first = answer_prompt(v, shipped.image_codes(sample.image)[0], text(question))
    assert shipped.chat_prompt(follow) == first + text(sample.qa[0]["a"]) + [v.eos, v.user] + \
        text(sample.qa[1]["q"]) + [v.assistant]
    # what the server checks requests with, before the images are encoded: the same length
    assert shipped.prompt_length(follow) == len(shipped.chat_prompt(follow))
    two_images = [Message("user", "which one?", [sample.image, sample.image])]
    assert shipped.prompt_length(two_images) == len(shipped.chat_prompt(two_images))


def test_text_only_chat_still_answers_in_text(shipped):
    from smalto.data.talk import HELLO_REPLY

    reply = shipped.chat([Message("user", "hello")], max_tokens=8)
    assert reply and HELLO_REPLY.startswith(reply) and len(reply) < len(HELLO_REPLY)  # its greeting, cut at 8 tokens


def test_bad_conversations_are_clear_errors(shipped):
    image = ShapesWorld(seed=0)[0].image
    with pytest.raises(SmaltoError, match="only accepted in user messages"):
        shipped.chat_prompt([Message("assistant", "x", [image])])
    with pytest.raises(SmaltoError, match="no user or assistant"):
        shipped.chat_prompt([Message("system", "hi")])
    for check in (shipped.chat_prompt, shipped.prompt_length):
        with pytest.raises(SmaltoError, match="context"):
            check([Message("user", "", [image] * 6)])  # 6 × 66 tokens: over the 384 of the context
        with pytest.raises(SmaltoError, match="only accepted in user messages"):
            check([Message("assistant", "x", [image])])
    with pytest.raises(ValueError, match="role"):
        Message("robot", "hi")
