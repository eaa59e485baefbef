import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smalto.engine import Engine, Sampling, sample
from smalto.model import ModelConfig, Transformer
from smalto.sequence import Grammar, Vocab, answer_example, caption_example, caption_prompt, draw_example, draw_prompt
from smalto.tokenizers.text import SPECIAL_TOKENS

# A toy vocabulary: 40 text ids (the first 16 special), 16 image codes, 4 codes per image.
V = Vocab(text_size=40, codebook_size=16, image_tokens=4, specials=tuple(range(len(SPECIAL_TOKENS))),
          **{name: SPECIAL_TOKENS.index(f"<|{name}|>") for name in
             ("bos", "eos", "pad", "boi", "eoi", "user", "assistant")})
CODES = torch.tensor([[3, 1], [4, 1]])


def engine(seed=0) -> Engine:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=V.size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=128,
                      max_seq_len=64)
    return Engine(Transformer(cfg), V)


def test_formats_and_loss_masks():
    cap = caption_example(V, CODES, [20, 21])
    image = [V.boi, 43, 41, 44, 41, V.eoi]
    assert cap.ids == [V.bos, V.user, *image, V.assistant, 20, 21, V.eos]
    assert [i for i, m in zip(cap.ids, cap.loss_mask) if m] == [20, 21, V.eos]
    qa = answer_example(V, CODES, [([22], [23]), ([24, 25], [26])])
    assert qa.ids[-9:] == [22, V.assistant, 23, V.eos, V.user, 24, 25, V.assistant, 26, V.eos][-9:]
    assert [i for i, m in zip(qa.ids, qa.loss_mask) if m] == [23, V.eos, 26, V.eos]
    trained = answer_example(V, CODES, [([22], [23])], train_image=True)
    assert [i for i, m in zip(trained.ids, trained.loss_mask) if m] == [*image[1:], 23, V.eos]
    draw = draw_example(V, [20, 21], CODES)
    assert draw.ids[:5] == [V.bos, V.user, 20, 21, V.assistant]
    assert [i for i, m in zip(draw.ids, draw.loss_mask) if m] == [*image, V.eos]
    assert draw_prompt(V, [20, 21]) == draw.ids[:6]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), images=st.sampled_from(["never", "allowed", "only"]))
def test_constrained_decoding_never_emits_an_invalid_token(seed, images):
    """Random logits, sampled freely: the grammar alone must keep every row well-formed."""
    gen = torch.Generator().manual_seed(seed)
    rows = 4
    grammar = Grammar(V, rows, images, in_image=images == "only")
    streams = [[] for _ in range(rows)]
    for _ in range(30):
        logits = torch.randn(rows, V.size, generator=gen) * 5
        token = sample(logits.masked_fill(~grammar.mask(), float("-inf")), Sampling(1.0), gen)
        grammar.advance(token)
        for s, t in zip(streams, token.tolist()):
            s.append(t)
    for s in streams:
        s = s[:s.index(V.eos) + 1] if V.eos in s else s
        inside = 0 if images == "only" else None
        for t in s:
            if inside is not None and inside < V.image_tokens:
                assert t >= V.text_size, "only image codes inside an image"
                inside += 1
            elif inside is not None:
                assert t == V.eoi, "an image ends with <eoi> after exactly image_tokens codes"
                inside = None
            elif t == V.boi:
                assert images == "allowed"
                inside = 0
            else:
                assert t == V.eos or (t < V.text_size and t not in V.specials), f"illegal text token {t}"
                if images == "only":
                    assert t == V.eos


def test_drawing_yields_exactly_one_image():
    e = engine()
    out = e.generate([draw_prompt(V, [20, 21])] * 3, V.image_tokens + 1, Sampling(1.0, seed=1), images="only")
    for row in out:
        assert len(row) == V.image_tokens + 1 and row[-1] == V.eoi
        assert all(t >= V.text_size for t in row[:-1])


def test_guidance_scale_0_is_unconditional_and_1_is_conditional():
    e = engine()
    cond = [draw_prompt(V, [20, 21, 22]), draw_prompt(V, [25])]
    uncond = [draw_prompt(V, [])] * 2
    n = V.image_tokens + 1
    for scale, reference in [(0.0, uncond), (1.0, cond)]:
        guided = e.generate(cond, n, images="only", guidance=scale, unconditional=uncond)
        assert guided == e.generate(reference, n, images="only")
    assert e.generate(cond, n, images="only", guidance=3.0, unconditional=uncond) != e.generate(cond, n, images="only")


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    e = engine()
    prompts = [caption_prompt(V, CODES)] * 4
    a = e.generate(prompts, 10, Sampling(1.0, seed=7))
    assert a == e.generate(prompts, 10, Sampling(1.0, seed=7))
    assert len({tuple(r) for r in a}) > 1, "different rows should sample differently"
    assert e.generate(prompts, 10, Sampling(1.0, top_k=1, seed=3)) == e.generate(prompts, 10)
    assert e.generate(prompts, 10, Sampling(1.0, top_p=1e-6, seed=3)) == e.generate(prompts, 10)
    assert e.generate(prompts, 10, Sampling(1.0, top_p=0.0, seed=3)) == e.generate(prompts, 10)
    # a vanishing temperature is greedy, not NaN (found by fuzzing the server)
    assert e.generate(prompts, 10, Sampling(3e-305, seed=3)) == e.generate(prompts, 10)


def test_text_generation_emits_only_text_and_stops_at_eos():
    e = engine(3)
    for row in e.generate([caption_prompt(V, CODES)] * 8, 20, Sampling(2.0, seed=0)):
        assert all(t < V.text_size and (t not in V.specials or t == V.eos) for t in row)
        assert V.eos not in row[:-1]


def _score(e: Engine, prompt, continuation) -> float:
    ids = torch.tensor([prompt + continuation])
    logp = e.model(ids)[0, :-1].log_softmax(-1)
    legal = (V.text_mask() | V.one(V.eos))
    logp = logp.masked_fill(~legal, float("-inf")).log_softmax(-1)
    return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(continuation)))


def test_beam_search_one_beam_is_greedy_and_more_beams_score_no_worse():
    e = engine(5)
    prompt = caption_prompt(V, CODES)
    greedy = e.generate([prompt], 12)[0]
    assert e.beam_search(prompt, beams=1, max_new_tokens=12, length_penalty=0.0)[:len(greedy)] == greedy
    beam = e.beam_search(prompt, beams=6, max_new_tokens=12, length_penalty=0.0)
    if beam[-1] == V.eos and greedy[-1] == V.eos:
        assert _score(e, prompt, beam) >= _score(e, prompt, greedy) - 1e-4


def test_prompt_past_the_context_is_an_error():
    with pytest.raises(ValueError, match="context"):
        engine().generate([[V.bos] * 60], 10)


def test_ignore_eos_gives_exactly_the_asked_length():
    e = engine(3)
    rows = e.generate([caption_prompt(V, CODES)] * 3, 30, Sampling(1.0, seed=0), ignore_eos=True)
    assert all(len(r) == 30 and V.eos not in r for r in rows)
    with pytest.raises(ValueError, match="eos=False is for text"):
        e.generate([draw_prompt(V, [20])], V.image_tokens + 1, images="only", ignore_eos=True)


def test_after_warm_up_a_compiled_engine_never_recompiles():
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V.size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=128,
                      max_seq_len=192)
    e = Engine(Transformer(cfg), V)
    reference = e.generate([[V.bos, V.user, 20, 21, V.assistant]] * 2, 12)
    e.model.compile_decoding()
    e.warm_up()
    compiled = dict(counters["stats"])
    assert e.generate([[V.bos, V.user, 20, 21, V.assistant]] * 2, 12) == reference  # same tokens, compiled
    for batch, length in ((5, 150), (1, 10), (7, 100)):  # new batch sizes and cache lengths
        e.generate([[V.bos] * length] * batch, 3, ignore_eos=True)
    assert dict(counters["stats"]) == compiled  # nothing was compiled again
    e.model.compile_decoding(False)
