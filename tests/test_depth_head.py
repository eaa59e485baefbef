"""The depth pattern: a sound is a token per codec frame (its level 0) carrying the frame's finer
levels, which a small depth head predicts one after another (Moshi's depth transformer)."""

import math

import numpy as np

import pytest
import torch

from smalto.checkpoint import load_checkpoint, save_checkpoint
from smalto.data.sounds import SoundConfig, SoundWorld
from smalto.format import Allowed, Carrying, FormatState, Modality, Span, Vocab, positions
from smalto.inference import Engine, Sampling
from smalto.model import ModelConfig, Transformer
from smalto.tokenizers import load_tokenizers
from smalto.tokenizers.text import SPECIAL_TOKENS
from smalto.training.data import ExampleStream, TaskMix, collate
from smalto.training.trainer import TrainConfig, _new_model, depth_frames, token_losses

SPECIALS = {t.removeprefix("<|").removesuffix("|>"): i for i, t in enumerate(SPECIAL_TOKENS)}
# 3 frames of 3 levels, 8 codes a level: level 0 is 56..63, level 1 64..71, level 2 72..79
V = Vocab({"text": Span(0, 40), "image": Span(40, 16), "audio": Span(56, 24)}, SPECIALS,
          {"image": Modality("image", (2, 2), "boi", "eoi"),
           "audio": Modality("audio", (3, 3), "boa", "eoa", levels=3, pattern="depth")})
CODES = torch.tensor([[1, 7, 0], [0, 3, 2], [5, 5, 7]])  # [frames, levels]


def model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig(vocab_size=V.size, dim=32, n_layers=2, n_heads=2, n_kv_heads=1, mlp_hidden=64,
                                   max_seq_len=64, depth_levels=2, depth_codes=8, depth_start=64)).eval()


def test_a_depth_sound_takes_a_step_a_frame_carrying_the_frames_finer_levels():
    ids = V.item_ids("audio", CODES)
    assert list(ids) == [V.boa, 57, 56, 61, V.eoa], "level 0 of each frame is its step's token"
    assert ids.extra == [[-1, -1, -1], [-1, 71, 72], [-1, 67, 74], [-1, 69, 79], [-1, -1, -1]]
    assert torch.equal(V.item_codes(ids[1:-1], "audio", ids[1:-1].extra)[0], CODES)
    assert Vocab.from_json(V.to_json()) == V and V.width == 3 and V.modalities["audio"].tokens == 3
    prompt = [V.bos, V.user] + ids + [V.assistant]
    with pytest.raises(ValueError, match="without the codes they carry"):
        V.carried(list(prompt))


def test_the_depth_head_sees_only_the_levels_before_the_one_it_predicts_and_its_heads_are_the_embeddings():
    net = model()
    state, codes, heads = torch.randn(5, 32), torch.randn(5, 2, 32), torch.randn(2, 8, 32)
    changed = codes.clone()
    changed[:, 1] += 1.0  # level 1's code: what position 1 reads to predict level 2
    a, b = net.depth(state, codes, heads), net.depth(state, changed, heads)
    torch.testing.assert_close(a[:, 0], b[:, 0])  # level 1 is predicted from the state and level 0 alone
    assert not torch.allclose(a[:, 1], b[:, 1])
    torch.testing.assert_close(net.depth(state, codes[:, :1], heads)[:, 0], a[:, 0])  # a level at a time, as decoding
    frame = torch.tensor([[57, 66]] * 5)
    tied = net.embed.weight[64:80].view(2, 8, 32)  # levels 1 and 2's embeddings are their heads
    torch.testing.assert_close(net.depth_logits(state, frame), net.depth(state, net.embed(frame), tied))


def depth_logprobs(net: Transformer, prompt: list[int], tokens: list[int], extra: list[list[int]]) -> torch.Tensor:
    """Each new token's log-probability with its carried codes' by one full forward pass (no cache),
    the depth head fed the codes decoded (teacher forcing)."""
    full = prompt + Carrying(tokens, extra)
    out = net(torch.tensor([list(full)]), positions(V, full)[None], extra=torch.tensor([full.extra]))
    logits, hidden = out.logits[0, len(prompt) - 1:-1], out.hidden[0, len(prompt) - 1:-1]
    state, expected = FormatState(V, [prompt], Allowed(text=False)), []
    for t, carried, step, h in zip(tokens, extra, logits, hidden):
        lp = step.masked_fill(~state.mask()[0], float("-inf")).log_softmax(-1)[t]
        if carried[1] >= 0:
            frame = torch.tensor([t, carried[1]])
            depth = net.depth_logits(h, frame).log_softmax(-1)  # [2 levels, 8 codes]
            lp = lp + depth[0, carried[1] - 64] + depth[1, carried[2] - 72]
        expected.append(lp)
        state.advance(torch.tensor([t]))
    return torch.stack(expected)


@pytest.mark.parametrize("guidance", [None, 2.0])
def test_decoding_picks_each_finer_code_from_the_depth_head_and_caches_as_the_full_forward_pass(guidance):
    net = model()
    engine = Engine(net, V)
    heard = [V.bos, V.user] + V.item_ids("audio", CODES) + [V.assistant, V.boa]
    for prompt in ([V.bos, V.user, 20, V.assistant, V.boa], heard):
        row = engine.generate([prompt, prompt], 4, Sampling(1.5, seed=1, guidance=guidance), Allowed(text=False),
                              unconditional=[[V.bos, V.user, V.assistant, V.boa]] * 2 if guidance else None)[0]
        assert row.tokens[-1] == V.eoa and len(row.tokens) == 4
        assert all(56 <= t < 64 for t in row.tokens[:3])
        assert all(r[0] == -1 and 64 <= r[1] < 72 and 72 <= r[2] < 80 for r in row.extra[:3])
        assert row.extra[3] == [-1, -1, -1], "<eoa> carries nothing"
        codes = V.item_codes(row.tokens[:3], "audio", row.extra[:3])
        assert codes.shape == (1, 3, 3)
        if guidance is None:
            torch.testing.assert_close(torch.tensor(row.logprobs), depth_logprobs(net, prompt, row.tokens, row.extra),
                                       atol=1e-4, rtol=1e-4)


def test_greedy_depth_codes_are_the_heads_argmax():
    net = model(3)
    prompt = [V.bos, V.user, 21, V.assistant, V.boa]
    row = Engine(net, V).generate([prompt], 4, Sampling(0.0), Allowed(text=False))[0]
    full = prompt + Carrying(row.tokens, row.extra)
    hidden = net(torch.tensor([list(full)]), positions(V, full)[None], extra=torch.tensor([full.extra])).hidden
    for i, (t, carried) in enumerate(zip(row.tokens[:3], row.extra[:3])):
        h = hidden[0, len(prompt) - 1 + i]
        first = net.depth_logits(h, torch.tensor([t]))[0].argmax()
        assert carried[1] == 64 + int(first)
        second = net.depth_logits(h, torch.tensor([t, carried[1]]))[1].argmax()
        assert carried[2] == 72 + int(second)


def test_the_stream_trains_the_depth_head_on_every_finer_code():
    tok = load_tokenizers()
    deep = Vocab.from_tokenizers(tok, sound=(54, 4), pattern="depth")
    examples = ExampleStream(tok, deep, mix=TaskMix(caption=0, draw=0, qa=0, sound_draw=1), seed=2,
                             max_len=256).examples(0, 4)
    sounds = tok.audio.encode(SoundWorld(SoundConfig(), 2, "train").waves(0, 4)).transpose(1, 2)
    for (_, e), codes in zip(examples, sounds):
        start = e.ids.index(deep.boa)
        assert len(e.ids) - start == 54 + 3, "a step a frame, <eoa>, <eos>"
        body = e.ids[start + 1:start + 55]
        assert torch.equal(deep.step_codes("audio", body, e.extra[start + 1:start + 55]), codes)
    batch = collate(examples, deep.pad, 256)
    frames = depth_frames(batch.targets, batch.extra_targets, batch.mask, 3)
    held = frames[..., 0] >= 0
    assert int(held.sum()) == 4 * 54, "every sound frame the stream trains on"
    assert torch.equal(frames[held][:, 0], batch.targets[held]), "level 0 is the step's own target token"
    spans = [deep.level_span("audio", k) for k in range(4)]
    logits = torch.zeros(*batch.targets.shape, deep.size)
    depth = torch.zeros(int(held.sum()), 3, 256)
    loss, stats = token_losses(logits, batch.targets, batch.mask, batch.tasks, batch.extra_targets, spans, depth)
    expected = int(batch.mask.sum()) * math.log(deep.size) + 4 * 54 * 3 * math.log(256)
    assert float(loss) == pytest.approx(expected, rel=1e-5) and int(stats[0]) == batch.tokens


def test_a_checkpoint_taking_the_depth_pattern_gains_a_head_and_keeps_the_rest(micro_base, tmp_path):
    base, vocab, _, _ = load_checkpoint(micro_base)
    deep, deep_vocab, _ = _new_model(TrainConfig(init_from=str(micro_base), sound_levels=4, sound_pattern="depth",
                                                 context=384, mix=TaskMix(sound_caption=1)))
    assert deep_vocab.pattern == "depth" and (deep.cfg.depth_levels, deep.cfg.depth_codes) == (3, 256)
    ids = torch.tensor([[vocab.bos, vocab.user, 30, 31, vocab.assistant]])
    torch.testing.assert_close(deep(ids).logits[..., :vocab.size], base(ids).logits)
    save_checkpoint(tmp_path / "deep", deep, deep_vocab, load_tokenizers(), extra={"step": 0})
    again, again_vocab, _, _ = load_checkpoint(tmp_path / "deep")
    assert again_vocab == deep_vocab and again.cfg == deep.cfg and deep.cfg.depth_start == vocab.size + 256
    assert all(torch.equal(a, b) for a, b in zip(again.depth.state_dict().values(), deep.depth.state_dict().values()))
    flat, flat_vocab, _ = _new_model(TrainConfig(init_from=str(tmp_path / "deep"), sound_pattern="flat",
                                                 mix=TaskMix(sound_caption=1)))
    assert flat.depth is None and flat.cfg.depth_levels == 0 and flat_vocab.pattern == "flat"
    torch.testing.assert_close(flat(ids).logits, deep(ids).logits)


def test_a_depth_pipeline_hears_and_makes_sounds_of_all_four_levels():
    from smalto.data.shapes import ShapesWorld
    from smalto.model import preset
    from smalto.pipeline import Pipeline

    tok = load_tokenizers()
    deep = Vocab.from_tokenizers(tok, sound=(54, 4), pattern="depth")
    torch.manual_seed(0)
    net = Transformer(preset("shapes-micro", deep.size, max_seq_len=256, depth_levels=3,
                             depth_start=deep.level_span("audio", 1)[0])).eval()
    pipe = Pipeline(net, deep, tok, sounds=True)
    wave = SoundWorld(SoundConfig(), 0, "train")[0].wave
    prompt = pipe.caption_prompts([wave])[0]
    assert len(prompt) == 2 + 56 + 1 and prompt.extra == deep.carried(prompt)
    codes = pipe.codecs["audio"].encode(wave[None])[0]
    assert torch.equal(deep.step_codes("audio", prompt[3:57], prompt.extra[3:57]), codes)
    made = pipe.generate("a small red circle at the center", modality="audio", seed=3, n=2)
    assert [m.shape for m in made] == [(21600,)] * 2 and not np.array_equal(made[0], made[1])
    assert pipe.sound_of(ShapesWorld()[0].image)[0].shape == (21600,)


def test_training_in_the_depth_pattern_writes_a_model_with_a_head_that_makes_sounds(tmp_path):
    import smalto
    from smalto.training.trainer import train

    out = tmp_path / "deep"
    log = train(out, TrainConfig(preset="shapes-micro", steps=4, batch_size=4, warmup=1, eval_every=0, save_every=4,
                                 log_every=1, precision="fp32", sound_levels=4, sound_pattern="depth", context=256,
                                 mix=TaskMix(caption=0, draw=0, qa=0, sound_caption=1, sound_draw=1, sound_next=1)),
                progress=False)
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    pipe = smalto.load(out)
    assert pipe.model.cfg.depth_levels == 3 and pipe.vocab.pattern == "depth"
    assert pipe.generate("a small red circle at the center", modality="audio")[0].shape == (21600,)
