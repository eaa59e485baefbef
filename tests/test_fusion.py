"""The three fusion designs (smalto.model.fusion): the xattn blocks start as the identity, the
projector's features land at the picture's places, fused prompts decode with a KV cache exactly
as a full forward pass, and each design's checkpoint round-trips and refuses another design's loader."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import openai
import pytest
import torch

import smalto
from smalto.adapters import AdapterConfig, attach
from smalto.checkpoint import load_checkpoint
from smalto.export import pack
from smalto.data.shapes import ShapesConfig, ShapesWorld
from smalto.errors import SmaltoError
from smalto.format import Allowed, FormatState, fuse, picture_starts, positions
from smalto.inference import Prompt
from smalto.model import ModelConfig, Transformer
from smalto.model.fusion import GatedCrossAttention, Images, batch_images
from smalto.format import Vocab, chat_prompt, fuse_ids
from smalto.inference import Engine
from smalto.pipeline import Message
from smalto.tokenizers import load_tokenizers
from smalto.training.data import ExampleStream, TaskMix
from smalto.training.trainer import TrainConfig, train

from conftest import running_server
from test_serve import data_url

TOKENIZERS = load_tokenizers()
VOCAB = Vocab.from_tokenizers(TOKENIZERS)
WORLD = ShapesWorld(ShapesConfig(), 0, "train")
PICTURES = [WORLD[i].image for i in range(3)]
MICRO = dict(vocab_size=VOCAB.size, dim=64, n_layers=4, n_heads=4, n_kv_heads=2, mlp_hidden=192, max_seq_len=256)


def model(fusion: str, open_gates: bool = False) -> Transformer:
    torch.manual_seed(0)
    m = Transformer(ModelConfig(**MICRO, fusion=fusion)).eval()
    if open_gates:  # as after training: the blocks add something
        for block in m.xattn:
            torch.nn.init.normal_(block.attn_gate, std=1.0)
            torch.nn.init.normal_(block.mlp_gate, std=1.0)
    return m


def test_a_zero_gated_cross_attention_block_is_the_identity():
    block = GatedCrossAttention(ModelConfig(**MICRO, fusion="xattn"))
    x, memory = torch.randn(2, 7, 64), torch.randn(2, 64, 64)
    seen = torch.ones(2, 1, 7, 64, dtype=torch.bool)
    assert torch.equal(block(x, *block.memory(memory), seen), x)
    with torch.no_grad():
        block.attn_gate.fill_(0.5)
    assert not torch.allclose(block(x, *block.memory(memory), seen), x)  # (the test can fail)


def test_a_fresh_xattn_model_ignores_its_pictures_until_its_gates_open():
    m, ids = model("xattn"), torch.randint(0, 500, (2, 40))
    images = Images(torch.rand(2, 1, 3, 32, 32) * 2 - 1, torch.tensor([[3], [10]]))
    assert torch.equal(m(ids, images=images).logits, m(ids).logits)
    opened = model("xattn", open_gates=True)
    differs = (opened(ids, images=images).logits - opened(ids).logits).abs().amax(-1)
    assert differs[0, :3].max() == 0 and differs[1, :10].max() == 0  # tokens before a picture do not see it
    assert differs[0, 3:].min() > 0 and differs[1, 10:].min() > 0


def test_projector_features_land_at_the_pictures_codes_and_nowhere_else():
    m, ids = model("projector"), torch.randint(0, 500, (2, 90))
    images = Images(torch.rand(2, 2, 3, 32, 32) * 2 - 1, torch.tensor([[2, -1], [5, -1]]))
    seen = {}
    m.layers[0].register_forward_pre_hook(lambda _, args: seen.update(x=args[0]))  # (None: args unchanged)
    m(ids, images=images)
    features = m.vision(images.pixels[:, 0])
    for row, start in enumerate((2, 5)):
        place = slice(start + 1, start + 65)
        assert torch.allclose(seen["x"][row, place], features[row])
        rest = torch.ones(90, dtype=torch.bool)
        rest[place] = False
        assert torch.equal(seen["x"][row, rest], m.embed(ids[row, rest]))


def test_fuse_rewrites_the_pictures_a_sequence_reads_and_leaves_drawings_as_codes():
    v = VOCAB
    stream = ExampleStream(TOKENIZERS, v, mix=TaskMix(caption=1, draw=1, qa=1))
    for task, e in stream.examples(0, 24):
        reads = picture_starts(v, e.ids, "projector")
        assert len(reads) == (task != 1)  # a drawing's picture is the assistant's: not read
        projector, xattn = fuse(v, e, "projector", PICTURES[0]), fuse(v, e, "xattn", PICTURES[0])
        assert projector.ids == e.ids and torch.equal(projector.positions, e.positions)
        for s in reads:
            assert not any(projector.loss_mask[s + 1:s + 66])  # the features give the codes away
            assert xattn.ids[s] == v.specials["reserved_0"] and len(xattn.ids) == len(e.ids) - 65
            assert torch.equal(xattn.positions, positions(v, xattn.ids))
        if not reads:
            assert xattn.ids == e.ids and xattn.loss_mask == e.loss_mask
        assert len(projector.pictures) == len(xattn.pictures) == len(xattn.picture_at) == len(reads)


@pytest.mark.parametrize("fusion, prompt_tuned", [("projector", False), ("xattn", False), ("xattn", True)])
def test_cached_decoding_equals_the_full_forward_pass(fusion, prompt_tuned):
    """Two prompts of different lengths (so one is left-padded), the longer one reading two pictures;
    with prompt tuning, learned embeddings before each (every index after them shifts)."""
    v, m = VOCAB, model(fusion, open_gates=fusion == "xattn")
    if prompt_tuned:
        attach(m, AdapterConfig("prompt", tokens=3))
    engine = Engine(m, v)
    codes = TOKENIZERS.image.encode(np.stack(PICTURES[:2]))
    one = chat_prompt(v, [("user", v.image_ids(codes[0]) + [300, 301])])
    two = chat_prompt(v, [("user", v.image_ids(codes[0]) + [302]), ("assistant", [303]),
                          ("user", v.image_ids(codes[1]) + [304])])
    prompts = [Prompt(fuse_ids(v, one, fusion)[0], PICTURES[:1]), Prompt(fuse_ids(v, two, fusion)[0], PICTURES[:2])]
    outs = engine.generate(prompts, 6, allowed=Allowed(eos=False))
    for p, out in zip(prompts, outs):
        full = list(p) + out.tokens
        images = batch_images([list(p.pictures)], [picture_starts(v, full, fusion)])
        logits = m(torch.tensor([full]), positions(v, full)[None], images=images).logits[0]
        state = FormatState(v, [full[:len(p) + k] for k in range(6)], Allowed(eos=False))
        greedy = logits[len(p) - 1:-1].masked_fill(~state.mask(), float("-inf")).argmax(-1)
        assert greedy.tolist() == out.tokens


def test_equal_ids_reading_different_pictures_are_not_merged():
    """The engine prefills equal prompts once: for xattn, equal ids may read different pictures."""
    v, m = VOCAB, model("xattn", open_gates=True)
    engine = Engine(m, v)
    ids = [v.bos, v.user, v.specials["reserved_0"], 300, v.assistant]
    both = engine.generate([Prompt(ids, PICTURES[:1]), Prompt(ids, PICTURES[1:2])], 8)
    alone = [engine.generate([Prompt(ids, [p])], 8)[0] for p in PICTURES[:2]]
    assert [o.tokens for o in both] == [o.tokens for o in alone]
    assert both[0].logprobs != both[1].logprobs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A micro run of each design, a few steps each."""
    root = tmp_path_factory.mktemp("fusion")
    out = {}
    for fusion, init in (("tokens", "scratch"), ("projector", "tokenizer"), ("xattn", "scratch")):
        out[fusion] = root / fusion
        train(out[fusion], TrainConfig(preset="shapes-micro", steps=6, batch_size=8, warmup=2, eval_every=0,
                                       save_every=6, precision="fp32", fusion=fusion, vision_init=init,
                                       mix=TaskMix(caption=1, draw=1, qa=1, premises=0.3)), progress=False)
    return out


def test_each_design_round_trips_and_another_designs_loader_refuses_it(runs, tmp_path):
    for fusion, path in runs.items():
        m, v, _, _ = load_checkpoint(path, fusion)
        assert m.cfg.fusion == fusion
        packed = tmp_path / fusion
        pack(path, packed, dtype=None)
        again, *_ = load_checkpoint(packed, fusion)
        first = v.ranges["image"].start
        ids, _, starts = fuse_ids(v, [v.bos, v.user, v.boi, *range(first, first + 64), v.eoi, v.assistant], fusion)
        images = batch_images([[PICTURES[0]] if starts else []], [starts])
        ids = torch.tensor([ids])
        assert torch.equal(m(ids, images=images).logits, again(ids, images=images).logits)
        for other in {"tokens", "projector", "xattn"} - {fusion}:
            with pytest.raises(SmaltoError, match=f"is a {fusion} model .* not a {other} one"):
                load_checkpoint(path, other)
    assert load_checkpoint(runs["projector"])[0].cfg.vision_encoder is not None


def test_vision_init_tokenizer_copies_the_image_tokenizers_encoder():
    from smalto.training.trainer import _new_model

    m, _, tokenizers = _new_model(TrainConfig(preset="shapes-micro", fusion="projector", vision_init="tokenizer"))
    copied, original = m.vision.stem[0].state_dict(), tokenizers.image.encoder.state_dict()
    assert copied.keys() == original.keys() and all(torch.equal(copied[k], original[k]) for k in original)
    fresh, *_ = _new_model(TrainConfig(preset="shapes-micro", fusion="projector"))
    assert isinstance(fresh.vision.stem, torch.nn.Conv2d)  # from scratch: a linear map of each patch


def test_each_design_reads_chats_and_draws_through_the_pipeline(runs):
    for fusion, path in runs.items():
        pipe = smalto.load(path)
        assert len(pipe.caption_batch(PICTURES)) == 3
        assert isinstance(pipe.ask(PICTURES[0], "is there a red circle?", effort="medium"), str)
        chat = [Message("user", "what is this?", [PICTURES[0]]), Message("assistant", "a shape"),
                Message("user", "and this?", [PICTURES[1]])]
        assert len(pipe.chat_prompt(chat)) == 2 * pipe.picture_tokens + len(pipe.chat_prompt(
            [Message(m.role, m.text) for m in chat]))
        assert isinstance(pipe.chat(chat), str)
        assert pipe.generate_image("a red circle")[0].shape == (32, 32, 3)
        assert np.isfinite(pipe.caption_logprob(PICTURES[:2], "a red circle")).all()


def test_commands_that_need_codes_say_so(runs, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "smalto", *args], capture_output=True, text=True)

    refused = run("train", "--out", str(tmp_path / "x"), "--init-from", str(runs["projector"]), "--fusion", "xattn",
                  "--steps", "1")
    assert refused.returncode != 0 and "is a projector model" in refused.stderr and "Traceback" not in refused.stderr
    exported = run("export", "--model", str(runs["xattn"]), "--out", str(tmp_path / "hf"))
    assert exported.returncode != 0 and "transformers' Qwen3 reads token ids only" in exported.stderr
    with pytest.raises(SmaltoError, match="clip and sound tasks need the tokens design"):
        ExampleStream(TOKENIZERS, VOCAB, mix=TaskMix(clip_caption=1), fusion="xattn")
    with pytest.raises(SmaltoError, match="names how a new projector or xattn model's ViT starts"):
        TrainConfig(vision_init="tokenizer")


def test_a_fused_model_serves_pictures_to_the_openai_client(runs):
    from smalto.apps.serve import ServeConfig

    pipe = smalto.load(runs["xattn"])
    with running_server(pipe, ServeConfig()) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        r = client.chat.completions.create(model="smalto", max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(PICTURES[0])}}, {"type": "text", "text": "hi"}]}])
    expected = pipe.chat([Message("user", "hi", [PICTURES[0]])], max_tokens=8)
    assert r.choices[0].message.content == expected
