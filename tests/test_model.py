import pytest
import torch

from smalto.format import Span, Vocab
from smalto.inference.engine import left_pad
from smalto.model import KVCache, ModelConfig, Transformer, preset


class Logits(Transformer):
    """The model with only its logits returned, to keep these tests short."""

    def forward(self, *args, **kwargs):
        return super().forward(*args, **kwargs).logits


def tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(**{**dict(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=128,
                             max_seq_len=64), **kw})
    return Logits(cfg).eval()


@pytest.mark.parametrize("kw", [{}, {"qk_norm": False, "tie_embeddings": False}, {"n_kv_heads": 4}])
def test_kv_cached_decoding_equals_full_forward(kw):
    model = tiny(**kw)
    ids = torch.randint(0, 97, (3, 20))
    full = model(ids)
    cache = KVCache(model.cfg, 3)
    steps = [model(ids[:, :12], cache=cache)]
    for t in range(12, 20):
        steps.append(model(ids[:, t:t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)


def test_left_padding_does_not_change_a_rows_logits():
    model = tiny()
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    ids, valid, positions, _ = left_pad(Vocab({"text": Span(0, 97)}, {"pad": 0}), prompts)
    cache = KVCache(model.cfg, 2)
    padded = model(ids, positions, cache, valid)[1, -1]
    alone = model(torch.tensor([prompts[1]]))[0, -1]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-4)
    # ... and the next step, fed through the cache, still matches
    nxt = model(torch.tensor([[1], [2]]), positions[:, :, -1:] + 1, cache)[1, -1]
    torch.testing.assert_close(nxt, model(torch.tensor([prompts[1] + [2]]))[0, -1], atol=1e-5, rtol=1e-4)
    assert torch.isfinite(model(ids, positions, KVCache(model.cfg, 2), valid)).all()


def test_causality():
    model = tiny()
    ids = torch.randint(0, 97, (1, 16))
    changed = ids.clone()
    changed[0, 10] = (changed[0, 10] + 1) % 97
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_tied_embeddings_share_storage_and_presets_exist():
    model = tiny()
    assert model.lm_head.weight.data_ptr() == model.embed.weight.data_ptr()
    cfg = preset("shapes-tiny", vocab_size=1000)
    assert 2e6 < Transformer(cfg).num_params() < 10e6
    with pytest.raises(KeyError):
        preset("gigantic", 1000)


def test_context_overflow_is_an_error():
    model = tiny()
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_compiled_decoding_matches_the_eager_step():
    model = tiny()
    ids = torch.randint(0, 97, (2, 24))
    eager_cache, compiled_cache = KVCache(model.cfg, 2), KVCache(model.cfg, 2)
    eager = [model(ids[:, :8], cache=eager_cache)]
    network = torch.compile(model.network)  # what Engine.compile does
    with torch.no_grad():
        for t in range(8, 24):
            eager.append(model(ids[:, t:t + 1], cache=eager_cache))
        compiled = [model(ids[:, :8], cache=compiled_cache)]
        for t in range(8, 24):
            compiled.append(model(ids[:, t:t + 1], cache=compiled_cache, network=network))
    torch.testing.assert_close(torch.cat(compiled, 1), torch.cat(eager, 1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cat(eager, 1), model(ids), atol=1e-5, rtol=1e-4)  # and both equal no cache


def test_bf16_weights_stay_close_to_float32():
    model = tiny()
    ids = torch.randint(0, 97, (3, 40))
    reference = model(ids)
    low = Logits(model.cfg).eval()
    low.load_state_dict(model.state_dict())
    low.to(torch.bfloat16)
    cache = KVCache(low.cfg, 3)  # float32 keys and values, as the engine keeps them
    cached = torch.cat([low(ids[:, :20], cache=cache)] + [low(ids[:, t:t + 1], cache=cache) for t in range(20, 40)], 1)
    for logits in (low(ids), cached):
        assert logits.dtype == torch.bfloat16
        assert (logits.float() - reference).abs().max() < 0.05 * reference.abs().max()
        assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() > 0.9


def test_input_embeddings_give_the_same_logits_as_ids_and_the_aux_loss_is_zero():
    model = tiny()
    ids = torch.randint(0, 97, (2, 10))
    out = Transformer.forward(model, ids)
    torch.testing.assert_close(model(embeds=model.embed(ids)), out.logits)
    assert out.aux_loss.item() == 0.0
    with pytest.raises(ValueError, match="either ids or embeds"):
        model(ids, embeds=model.embed(ids))
