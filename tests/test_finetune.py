"""Fine-tuning four ways (issue 13): full, LoRA, prompt tuning, linear probe."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from smalto.adapters import AdapterConfig, attach, fingerprint, merge
from smalto.checkpoint import load_checkpoint
from smalto.export import pack
from smalto.data.shapes import WORLDS, ShapesWorld, world_config
from smalto.errors import SmaltoError
from smalto.format import DRAWING, caption_prompt, draw_prompt, positions
from smalto.inference import Sampling
from smalto.pipeline import load
from smalto.training.finetune import FinetuneConfig, finetune
from smalto.training.probe import Probe, fit_probe, hidden_features, probe_data
from smalto.training.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def base(micro_base):
    return micro_base


def tuned(base, out, method: str, steps: int = 12, **kw) -> dict:
    cfg = FinetuneConfig(base=str(base), method=method, steps=steps, batch_size=8, warmup=2, save_every=steps, **kw)
    return finetune(out, cfg, progress=False)


def losses(run) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]


def logits_of(model, vocab, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids]), positions(vocab, ids)[None]).logits


def test_the_new_world_adds_a_shape_and_a_colour_the_default_never_shows():
    plus, default = WORLDS["shapes-plus"], WORLDS["shapes"]
    assert plus.new_words == {"diamond", "orange"} and default.new_words == set()
    seen = {w for i in range(300) for o in ShapesWorld(world_config("shapes", 32), 0)[i].scene.objects
            for w in (o.shape, o.color)}
    assert not seen & plus.new_words
    plus_seen = {w for i in range(300) for o in ShapesWorld(world_config("shapes-plus", 32), 0)[i].scene.objects
                 for w in (o.shape, o.color)}
    assert plus.new_words <= plus_seen


@pytest.mark.parametrize("method", ["full", "lora", "prompt"])
def test_each_method_lowers_the_new_task_loss_and_round_trips(base, tmp_path, method):
    lr = {"full": 3e-3, "lora": 1e-2, "prompt": 0.1}[method]
    report = tuned(base, tmp_path / method, method, steps=16, lr=lr)
    run = losses(tmp_path / method)
    assert run[-1] < run[0] - 0.05, run
    model, vocab, _, _ = load_checkpoint(base)
    total = sum(p.numel() for p in model.parameters())
    if method == "full":
        assert report["trainable"] == total
        pipe = load(tmp_path / method, "fp32")
    else:
        assert 0 < report["trainable"] < total / 5
        pipe = load(base, "fp32", adapter=tmp_path / method)
        assert sorted(p.name for p in (tmp_path / method).iterdir()) == \
            ["adapter.json", "adapter.safetensors", "log.jsonl", "loss.png", "optimizer.safetensors"]
    assert pipe.world == world_config("shapes-plus", 32)  # what it was tuned on is what it is checked against
    # The loaded model computes what the trained one did: resume from the saved run and compare.
    ids = draw_prompt(vocab, [40, 41, 42])
    again = load(tmp_path / method, "fp32") if method == "full" else load(base, "fp32", adapter=tmp_path / method)
    assert torch.equal(logits_of(pipe.model, vocab, ids), logits_of(again.model, vocab, ids))
    plain = logits_of(load(base, "fp32").model, vocab, ids)
    assert not torch.allclose(logits_of(pipe.model, vocab, ids), plain), "the tuning changed nothing"


def test_an_adapter_run_resumes_exactly(base, tmp_path):
    whole = tmp_path / "whole"
    tuned(base, whole, "lora", steps=6)
    cfg = FinetuneConfig(base=str(base), method="lora", steps=6, batch_size=8, warmup=2, save_every=3)
    train(tmp_path / "paused", cfg.train_config(), progress=False, pause_at=3)
    finetune(tmp_path / "paused", cfg, resume=True, progress=False)
    a, b = (load_file(run / "adapter.safetensors") for run in (whole, tmp_path / "paused"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_merged_lora_equals_base_plus_adapter(base, tmp_path):
    tuned(base, tmp_path / "lora", "lora", steps=6, lr=1e-2)
    pipe = load(base, "fp32", adapter=tmp_path / "lora")
    ids = caption_prompt(pipe.vocab, torch.zeros(8, 8, dtype=torch.long)) + [40, 41]
    adapted = logits_of(pipe.model, pipe.vocab, ids)
    merge(pipe.model)
    assert not any("lora" in name for name in pipe.model.state_dict())
    torch.testing.assert_close(logits_of(pipe.model, pipe.vocab, ids), adapted, rtol=1e-4, atol=1e-4)
    # packed with the adapter merged: a plain model directory that computes the same
    packed = pack(base, tmp_path / "packed", None, adapter=tmp_path / "lora")
    model, vocab, _, meta = load_checkpoint(packed)
    torch.testing.assert_close(logits_of(model, vocab, ids), adapted, rtol=1e-4, atol=1e-4)
    assert meta["train"]["data"] == "shapes-plus"
    with pytest.raises(SmaltoError, match="cannot be merged"):
        tuned(base, tmp_path / "prompt", "prompt", steps=2)
        merge(load(base, "fp32", adapter=tmp_path / "prompt").model)


def test_prompt_tuning_leaves_the_base_weights_bit_identical(base, tmp_path):
    before = {k: v.clone() for k, v in load_checkpoint(base)[0].state_dict().items()}
    tuned(base, tmp_path / "prompt", "prompt", steps=8, lr=0.1)
    pipe = load(base, "fp32", adapter=tmp_path / "prompt")
    after = {k: v for k, v in pipe.model.state_dict().items() if not k.startswith("prompt.")}
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert pipe.model.prompt_tokens == 8 and pipe.context == pipe.model.cfg.max_seq_len - 8
    # The learned tokens come first in the cache too: decoding with it equals full forward passes.
    v = pipe.vocab
    ids = draw_prompt(v, [40, 41])
    drawn = pipe.engine.generate([ids], 3, Sampling(temperature=1.0, seed=0), DRAWING)[0]
    image = slice(v.ranges["image"].start, v.ranges["image"].stop)
    for k, (token, logprob) in enumerate(zip(drawn.tokens, drawn.logprobs)):
        full = logits_of(pipe.model, v, ids + drawn.tokens[:k])[0, -1, image].log_softmax(-1)
        assert logprob == pytest.approx(float(full[token - image.start]), abs=1e-4)


def test_an_adapter_on_another_base_is_a_clear_error(base, tmp_path):
    tuned(base, tmp_path / "lora", "lora", steps=2)
    other = tmp_path / "other"
    train(other, TrainConfig(preset="shapes-micro", steps=2, batch_size=8, eval_every=0, save_every=2, seed=1),
          progress=False)
    with pytest.raises(SmaltoError, match="trained on another base model"):
        load(other, adapter=tmp_path / "lora")
    with pytest.raises(SmaltoError, match="is a lora adapter, not a model"):
        load(tmp_path / "lora")
    with pytest.raises(SmaltoError, match="not an adapter directory"):
        load(base, adapter=other)
    # a damaged adapter file is named
    (tmp_path / "lora" / "adapter.safetensors").write_bytes(b"junk")
    with pytest.raises(SmaltoError, match="adapter.safetensors"):
        load(base, adapter=tmp_path / "lora")


def test_the_fingerprint_ignores_the_storage_dtype_but_not_the_weights(base, tmp_path):
    model = load_checkpoint(base)[0]
    packed = load_checkpoint(pack(base, tmp_path / "bf16"))[0]  # weights stored in bf16
    assert fingerprint(model) == fingerprint(packed)
    attach(model, AdapterConfig("lora", rank=2))
    assert fingerprint(model) == fingerprint(packed)  # adapters are not the base
    with torch.no_grad():
        model.embed.weight[0, 0] += 1.0
    assert fingerprint(model) != fingerprint(packed)


def test_bad_adapter_settings_are_clear_errors(base):
    with pytest.raises(SmaltoError, match="adapter method"):
        AdapterConfig("dora")
    with pytest.raises(SmaltoError, match="LoRA targets"):
        AdapterConfig("lora", targets=("q_proj",))
    with pytest.raises(SmaltoError, match="an adapter trains on a base model"):
        TrainConfig(preset="shapes-micro", adapter=AdapterConfig("lora"))
    with pytest.raises(SmaltoError, match="method must be one of"):
        FinetuneConfig(method="distill")
    model = load_checkpoint(base)[0]
    attach(model, AdapterConfig("prompt", tokens=2))
    with pytest.raises(SmaltoError, match="already carries a prompt adapter"):
        attach(model, AdapterConfig("lora"))


def test_a_probe_reads_labels_from_frozen_states_and_round_trips(base, tmp_path):
    report = tuned(base, tmp_path / "probe", "probe", steps=200, examples=300)
    assert report["classes"] == ["circle", "diamond", "nothing", "square", "triangle"]
    # better than guessing the most frequent class would be, as the same classifier on pixels is
    assert report["test"] == 60 and report["accuracy"] > 100 / len(report["classes"]) and report["pixel_baseline"] > 50
    probe, meta = Probe.load(tmp_path / "probe")
    model, vocab, tok, _ = load_checkpoint(base)
    images, labels = probe_data("shapes-plus", 32, 300, 0)
    x = hidden_features(model, vocab, tok.image.encode(images[240:]))
    right = [a == b for a, b in zip(probe.predict(x), labels[240:])]
    assert 100 * np.mean(right) == pytest.approx(report["accuracy"], abs=0.05)
    assert meta["base"]["fingerprint"] == fingerprint(model)


def test_a_linear_probe_separates_what_is_linearly_separable():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(200, 5)), dtype=torch.float32)
    labels = ["a" if v > 0 else "b" for v in (x[:, 0] - 2 * x[:, 3]).tolist()]
    probe = fit_probe(x[:150], labels[:150])
    assert np.mean([p == t for p, t in zip(probe.predict(x[150:]), labels[150:])]) > 0.9


def test_a_folder_probe_needs_labels(tmp_path):
    from smalto.data import write_shapes

    folder = write_shapes(tmp_path / "f", 6)
    with pytest.raises(SmaltoError, match='record 1 of data.jsonl has no "label"'):
        probe_data(str(folder), 32, 6)
    lines = [json.loads(x) | {"label": "x" if i % 2 else "y"}
             for i, x in enumerate((folder / "data.jsonl").read_text().splitlines())]
    (folder / "data.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    images, labels = probe_data(str(folder), 32, 6)
    assert images.shape == (6, 32, 32, 3) and sorted(labels) == ["x"] * 3 + ["y"] * 3


def test_the_command_line_fine_tunes_and_applies_an_adapter(base, tmp_path, capsys):
    from smalto.apps.cli import main

    assert main(["finetune", "--from", str(base), "--method", "lora", "--steps", "2", "--batch-size", "4",
                 "--out", str(tmp_path / "lora")]) == 0
    assert "lora: trained" in capsys.readouterr().out
    image = tmp_path / "scene.png"
    from PIL import Image

    Image.fromarray(ShapesWorld(world_config("shapes-plus", 32), 0)[0].image).save(image)
    assert main(["caption", str(image), "--model", str(base), "--adapter", str(tmp_path / "lora")]) == 0
    assert main(["caption", str(image), "--model", str(tmp_path / "lora")]) == 2
    assert "is a lora adapter, not a model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--method", "probe", "--steps", "0", "--out", str(tmp_path / "p")])
    assert exit_.value.code == 2 and "--steps: must be an integer >= 1" in capsys.readouterr().err
