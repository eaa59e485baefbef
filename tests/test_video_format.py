"""Clips in the token stream: <bov> frame <eof> frame ... <eov>, their positions under both rules,
the grammar that decodes them, and 3-axis rotary positions in the model."""

import pytest
import torch

from smalto.format import Allowed, FormatState, Modality, Span, Vocab, positions
from smalto.inference import Engine, Sampling
from smalto.model import KVCache, ModelConfig, Transformer
from smalto.model.transformer import rope_axes
from smalto.tokenizers.text import SPECIAL_TOKENS

SPECIALS = {t.removeprefix("<|").removesuffix("|>"): i for i, t in enumerate(SPECIAL_TOKENS)}
MODALITIES = {"image": Modality("image", (2, 2), "boi", "eoi"),
              "video": Modality("image", (2, 2), "bov", "eov", frames=3, sep="eof")}


def vocab(rule: str) -> Vocab:
    return Vocab({"text": Span(0, 40), "image": Span(40, 16)}, SPECIALS, MODALITIES, rule)


CLIP = torch.arange(12).view(3, 2, 2) % 16


def test_a_clip_is_written_frame_by_frame_and_read_back():
    v = vocab("index")
    ids = v.video_ids(CLIP)
    assert len(ids) == 2 + 3 * 4 + 2 and ids[0] == v.bov and ids[-1] == v.eov
    assert [i for i, t in enumerate(ids) if t == v.eof] == [5, 10]
    assert torch.equal(v.item_codes(ids[1:-1], "video"), CLIP)
    with pytest.raises(ValueError, match="3 x"):
        v.video_ids(CLIP[:2])
    assert Vocab.from_json(vocab("grid").to_json()) == vocab("grid")


def test_grid_positions_put_frames_in_time_and_cells_in_rows_and_columns():
    v = vocab("grid")
    ids = [v.bos, v.user, *v.video_ids(CLIP), 20, 21]
    pos = positions(v, ids)
    s = 3  # <bos> 0, <user> 1, <bov> 2: the clip's codes count from 3
    codes = [i for i in range(3, 3 + 14) if ids[i] != v.eof]
    assert pos[:, codes].T.tolist() == [[s + f, s + r, s + c] for f in range(3) for r in range(2) for c in range(2)]
    assert pos[:, 7].tolist() == [s + 0, s + 2, s + 2], "an <eof> sits just past its frame's grid"
    assert pos[:, 3 + 14].tolist() == [s + 3] * 3, "<eov> continues from the largest position + 1"
    assert pos[:, -2:].tolist() == [[s + 4, s + 5]] * 3, "and text after it"
    image = positions(v, [v.bos, *v.image_ids(CLIP[0]), 20])
    assert image[:, 2:6].T.tolist() == [[2, 2 + r, 2 + c] for r in range(2) for c in range(2)]
    assert image[:, -1].tolist() == [5] * 3


def test_index_positions_keep_the_running_index_on_row_0():
    v = vocab("index")
    ids = [v.bos, v.user, *v.video_ids(CLIP), 20, v.boi, *v.image_ids(CLIP[1])[1:]]
    assert positions(v, ids)[0].tolist() == list(range(len(ids)))


@pytest.mark.parametrize("rule", ["index", "grid"])
def test_the_format_state_decodes_well_formed_clips_at_the_positions_of_the_full_sequence(rule):
    v = vocab(rule)
    rope = "1d" if rule == "index" else "mrope"
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=v.size, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, mlp_hidden=64,
                                    max_seq_len=64, rope=rope)).eval()
    engine = Engine(model, v)
    prompts = [[v.bos, v.user, 20, v.assistant, v.bov], [v.bos, v.user, v.assistant, *v.video_ids(CLIP)[:7]]]
    for prompt in prompts:
        out = engine.generate([prompt], 20, Sampling(1.0, seed=3), Allowed(text=False))[0].tokens
        body = (prompt + out)[prompt.index(v.bov) + 1:]
        assert body[-1] == v.eov and len(body) == 15
        assert v.item_codes(body[:-1], "video").shape == (3, 2, 2)
        state, seen = FormatState(v, [prompt], Allowed(text=False)), []
        for t in out:
            seen.append(state.positions()[0])
            state.advance(torch.tensor([t]))
        assert torch.equal(torch.stack(seen).T, positions(v, prompt + out)[:, len(prompt):])
        assert state.finished.all()


def tiny(rope: str) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=128,
                                   max_seq_len=64, rope=rope)).eval()


def test_rope_axes_split_the_frequencies_as_qwen_does():
    cfg = ModelConfig(vocab_size=8, dim=256, n_heads=2, n_kv_heads=2)  # head_dim 128: 64 frequencies
    assert torch.bincount(rope_axes(ModelConfig(**{**cfg.__dict__, "rope": "mrope"}))).tolist() == [16, 24, 24]
    assert rope_axes(ModelConfig(**{**cfg.__dict__, "rope": "interleaved"}))[:6].tolist() == [0, 1, 2, 0, 1, 2]
    assert rope_axes(cfg) is None
    with pytest.raises(ValueError, match="rope"):
        ModelConfig(vocab_size=8, rope="2d")


@pytest.mark.parametrize("rope", ["mrope", "interleaved"])
def test_three_axis_rope_with_equal_axes_is_the_1d_model_and_caches_exactly(rope):
    ids = torch.randint(0, 97, (2, 20))
    torch.testing.assert_close(tiny(rope)(ids).logits, tiny("1d")(ids).logits)  # all axes at the running index
    model = tiny(rope)
    pos = torch.stack([torch.arange(20), torch.arange(20) // 3, torch.arange(20) % 5]).expand(2, 3, 20)
    full = model(ids, pos).logits
    assert not torch.allclose(full, tiny("1d")(ids, pos).logits), "the axes are read"
    cache = KVCache(model.cfg, 2)
    steps = [model(ids[:, :12], pos[:, :, :12], cache).logits]
    for t in range(12, 20):
        steps.append(model(ids[:, t:t + 1], pos[:, :, t:t + 1], cache).logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)
