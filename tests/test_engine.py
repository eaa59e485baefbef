import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smalto.format import (DRAWING, Allowed, FormatState, Modality, Span, Vocab, answer_example, caption_example,
                           caption_prompt, draw_example, draw_prompt, positions)
from smalto.inference import Engine, Sampling
from smalto.inference.strategies import Sample
from smalto.model import ModelConfig, Transformer
from smalto.tokenizers.text import SPECIAL_TOKENS

# A toy vocabulary: 40 text ids (the first 16 special), 16 image codes, 2x2 codes per image.
V = Vocab({"text": Span(0, 40), "image": Span(40, 16)},
          {t.removeprefix("<|").removesuffix("|>"): i for i, t in enumerate(SPECIAL_TOKENS)},
          {"image": Modality("image", (2, 2), "boi", "eoi")})
CODES = torch.tensor([[3, 1], [4, 1]])
IMAGES = {"never": Allowed(), "allowed": Allowed(items=("image",)), "only": DRAWING}


def tokens(generations) -> list[list[int]]:
    return [g.tokens for g in generations]


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
    prompt = draw_prompt(V, [20]) if images == "only" else caption_prompt(V, CODES)
    grammar = FormatState(V, [prompt] * rows, IMAGES[images])
    streams = [[] for _ in range(rows)]
    for _ in range(30):
        logits = torch.randn(rows, V.size, generator=gen) * 5
        token = Sample(gen)(logits.masked_fill(~grammar.mask(), float("-inf")))
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
                assert t == V.eos or (t < V.text_size and t not in V.specials.values()), f"illegal text token {t}"
                if images == "only":
                    assert t == V.eos


def test_drawing_yields_exactly_one_image():
    e = engine()
    out = e.generate([draw_prompt(V, [20, 21])] * 3, V.image_tokens + 1, Sampling(1.0, seed=1), DRAWING)
    for row in tokens(out):
        assert len(row) == V.image_tokens + 1 and row[-1] == V.eoi
        assert all(t >= V.text_size for t in row[:-1])


def test_guidance_scale_0_is_unconditional_and_1_is_conditional():
    e = engine()
    cond = [draw_prompt(V, [20, 21, 22]), draw_prompt(V, [25])]
    uncond = [draw_prompt(V, [])] * 2
    n = V.image_tokens + 1
    for scale, reference in [(0.0, uncond), (1.0, cond)]:
        guided = e.generate(cond, n, Sampling(guidance=scale), DRAWING, unconditional=uncond)
        assert tokens(guided) == tokens(e.generate(reference, n, allowed=DRAWING))
    assert tokens(e.generate(cond, n, Sampling(guidance=3.0), DRAWING, unconditional=uncond)) != \
        tokens(e.generate(cond, n, allowed=DRAWING))
    with pytest.raises(ValueError, match="unconditional"):
        e.generate(cond, n, Sampling(guidance=3.0), DRAWING)


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    e = engine()
    prompts = [caption_prompt(V, CODES)] * 4
    a = tokens(e.generate(prompts, 10, Sampling(1.0, seed=7)))
    assert a == tokens(e.generate(prompts, 10, Sampling(1.0, seed=7)))
    assert len({tuple(r) for r in a}) > 1, "different rows should sample differently"
    greedy = tokens(e.generate(prompts, 10))
    assert tokens(e.generate(prompts, 10, Sampling(1.0, top_k=1, seed=3))) == greedy
    assert tokens(e.generate(prompts, 10, Sampling(1.0, top_p=1e-6, seed=3))) == greedy
    assert tokens(e.generate(prompts, 10, Sampling(1.0, top_p=0.0, seed=3))) == greedy
    # a vanishing temperature is greedy, not NaN (found by fuzzing the server)
    assert tokens(e.generate(prompts, 10, Sampling(3e-305, seed=3))) == greedy


def test_text_generation_emits_only_text_and_stops_at_eos():
    e = engine(3)
    for row in tokens(e.generate([caption_prompt(V, CODES)] * 8, 20, Sampling(2.0, seed=0))):
        assert all(t < V.text_size and (t not in V.specials.values() or t == V.eos) for t in row)
        assert V.eos not in row[:-1]


def _score(e: Engine, prompt, continuation) -> float:
    ids = torch.tensor([prompt + continuation])
    logp = e.model(ids).logits[0, :-1].log_softmax(-1)
    legal = (V.text_mask() | V.one(V.eos))
    logp = logp.masked_fill(~legal, float("-inf")).log_softmax(-1)
    return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(continuation)))


def test_beam_search_one_beam_is_greedy_and_more_beams_score_no_worse():
    e = engine(5)
    prompt = caption_prompt(V, CODES)
    greedy = e.generate([prompt], 12)[0].tokens
    assert e.beam_search(prompt, beams=1, max_new_tokens=12, length_penalty=0.0)[:len(greedy)] == greedy
    beam = e.beam_search(prompt, beams=6, max_new_tokens=12, length_penalty=0.0)
    if beam[-1] == V.eos and greedy[-1] == V.eos:
        assert _score(e, prompt, beam) >= _score(e, prompt, greedy) - 1e-4


def test_prompt_past_the_context_is_an_error():
    with pytest.raises(ValueError, match="context"):
        engine().generate([[V.bos] * 60], 10)


def test_ignore_eos_gives_exactly_the_asked_length():
    e = engine(3)
    rows = tokens(e.generate([caption_prompt(V, CODES)] * 3, 30, Sampling(1.0, seed=0), Allowed(eos=False)))
    assert all(len(r) == 30 and V.eos not in r for r in rows)
    with pytest.raises(ValueError, match="eos=False is for text"):
        Allowed(text=False, eos=False)


def test_after_warm_up_a_compiled_engine_never_recompiles():
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V.size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=128,
                      max_seq_len=192)
    e = Engine(Transformer(cfg), V)
    reference = tokens(e.generate([[V.bos, V.user, 20, 21, V.assistant]] * 2, 12))
    e.compile()
    e.warm_up()
    compiled = dict(counters["stats"])
    assert tokens(e.generate([[V.bos, V.user, 20, 21, V.assistant]] * 2, 12)) == reference  # same tokens, compiled
    for batch, length in ((5, 150), (1, 10), (7, 100)):  # new batch sizes and cache lengths
        e.generate([[V.bos] * length] * batch, 3, allowed=Allowed(eos=False))
    assert dict(counters["stats"]) == compiled  # nothing was compiled again
    e.compile(False)


# --- positions, log-probabilities, forced tokens, per-row limits


def test_positions_are_the_running_index_on_row_0_and_the_grid_on_rows_1_and_2():
    for example in (caption_example(V, CODES, [20, 21]), answer_example(V, CODES, [([22], [23]), ([24], [25])]),
                    draw_example(V, [20, 21], CODES)):
        pos = example.positions
        assert pos.shape == (3, len(example.ids))
        assert pos[0].tolist() == list(range(len(example.ids)))
        start = example.ids.index(V.boi) + 1
        assert pos[1:, start:start + 4].T.tolist() == [[start + r, start + c] for r in range(2) for c in range(2)]
        text = [i for i in range(len(example.ids)) if not start <= i < start + 4]
        assert (pos[:, text] == pos[0, text]).all(), "text tokens sit at (i, i, i)"
        assert pos[:, start + 4].tolist() == [start + 4] * 3, "text after an image continues from the largest + 1"


def test_the_format_state_gives_the_positions_of_the_full_sequence():
    e = engine(2)
    for prompt, allowed in ((draw_prompt(V, [20, 21]), DRAWING), (caption_prompt(V, CODES), Allowed(items=("image",)))):
        out = e.generate([prompt], 12, Sampling(1.0, seed=4), allowed)[0].tokens
        state, seen = FormatState(V, [prompt], allowed), []
        for t in out:
            seen.append(state.positions()[0])
            state.advance(torch.tensor([t]))
        assert torch.equal(torch.stack(seen).T, positions(V, prompt + out)[:, len(prompt):])


def test_log_probabilities_equal_log_softmax_of_a_full_forward_pass_over_the_legal_tokens():
    e = engine(4)
    prompts = [caption_prompt(V, CODES), [V.bos, V.user, 20, V.assistant]]
    legal = V.text_mask() | V.one(V.eos)  # what a text row may emit
    for sampling in (Sampling(), Sampling(1.5, top_k=5, seed=1)):
        for prompt, g in zip(prompts, e.generate(prompts, 10, sampling)):
            full = prompt + g.tokens
            ids, pos = torch.tensor([full]), positions(V, full)[None]
            logp = e.model(ids, pos).logits[0, len(prompt) - 1:-1].masked_fill(~legal, float("-inf")).log_softmax(-1)
            expected = logp.gather(1, torch.tensor(g.tokens)[:, None]).squeeze(1)
            torch.testing.assert_close(torch.tensor(g.logprobs), expected, atol=1e-4, rtol=1e-4)


def test_forced_tokens_are_emitted_exactly_then_decoding_goes_on():
    e = engine(6)
    prompts = [caption_prompt(V, CODES)] * 3
    forced = [[30, 31, 32], [], [V.boi]]
    out = tokens(e.generate(prompts, 12, Sampling(1.0, seed=2), Allowed(items=("image",)), forced=forced))
    assert out[0][:3] == [30, 31, 32]
    assert out[2][0] == V.boi and all(t >= V.text_size for t in out[2][1:5]) and out[2][5] == V.eoi
    free = tokens(e.generate(prompts[:1], 12))[0]
    forced_greedy = tokens(e.generate(prompts[:1], 12, forced=[[free[0]]]))[0]
    assert forced_greedy == free, "forcing what greedy picks anyway changes nothing"


def test_each_row_stops_at_its_own_limit():
    e = engine(3)
    limits = [0, 1, 7, 20]
    out = tokens(e.generate([caption_prompt(V, CODES)] * 4, limits, Sampling(1.0, seed=0), Allowed(eos=False)))
    assert [len(r) for r in out] == limits
    alone = tokens(e.generate([caption_prompt(V, CODES)], 20, Sampling(), Allowed(eos=False)))[0]
    together = tokens(e.generate([caption_prompt(V, CODES)] * 2, [5, 20], Sampling(), Allowed(eos=False)))
    assert together == [alone[:5], alone]
    with pytest.raises(ValueError, match="one per prompt"):
        e.generate([caption_prompt(V, CODES)] * 2, [5], Sampling())


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), budget=st.integers(1, 12))
def test_a_thinking_budget_is_never_exceeded_and_a_trace_opens_once_and_closes_before_the_end(seed, budget):
    """Random logits that favour thinking tokens: at most `budget` tokens between <think> and
    </think>, one trace per row, and no <eos> while thinking."""
    gen = torch.Generator().manual_seed(seed)
    rows = 4
    grammar = FormatState(V, [caption_prompt(V, CODES)] * rows, Allowed(thinking=budget))
    streams = [[] for _ in range(rows)]
    for _ in range(40):
        logits = torch.randn(rows, V.size, generator=gen) * 3
        logits[:, [V.think, V.eos]] += 2.0  # tempt rows to open a trace and to stop inside it
        token = Sample(gen)(logits.masked_fill(~grammar.mask(), float("-inf")))
        grammar.advance(token)
        for s, t in zip(streams, token.tolist()):
            if not (s and s[-1] == V.eos):
                s.append(t)
    for s in streams:
        assert s.count(V.think) <= 1
        if s[-1] == V.eos:  # a finished row closed its trace
            assert s.count(V.end_think) == s.count(V.think)
        if V.think in s:
            start = s.index(V.think)
            end = s.index(V.end_think) if V.end_think in s else len(s)
            assert end - start - 1 <= budget and V.eos not in s[start:end]


def test_the_engine_keeps_a_forced_trace_within_its_budget():
    e = engine()
    for budget in (1, 5, 9):
        for g in e.generate([caption_prompt(V, CODES)] * 3, 20, Sampling(temperature=1.5, seed=budget),
                            Allowed(thinking=budget), forced=[[V.think]] * 3):
            assert g.tokens[0] == V.think
            closed = g.tokens.index(V.end_think) if V.end_think in g.tokens else len(g.tokens)
            assert closed - 1 <= budget


def test_equal_prompts_are_prefilled_once_and_decode_as_if_alone():
    e = engine(3)
    a, b = caption_prompt(V, CODES), caption_prompt(V, CODES.flip(0))
    together = tokens(e.generate([a, b, a, a], 8))
    assert together == [tokens(e.generate([p], 8))[0] for p in (a, b, a, a)]
    calls = []
    hook = e.model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape))
    try:
        e.generate([a, a, a, b], 2)
    finally:
        hook.remove()
    assert calls[0][0] == 2  # the prefill ran on the two distinct prompts
