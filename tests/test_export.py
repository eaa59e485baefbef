"""Export to transformers: a stock class loads it, the logits match, greedy decoding is identical."""

import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

from smalto.checkpoint import save_checkpoint
from smalto.inference.engine import Engine
from smalto.export import export_hf
from smalto.model import Transformer, preset
from smalto.format import Allowed, FormatState, Vocab, caption_prompt
from smalto.tokenizers import load_tokenizers

TOK = load_tokenizers()
V = Vocab.from_tokenizers(TOK)


def random_model(tmp_path, **overrides):
    torch.manual_seed(1)
    model = Transformer(preset("shapes-micro", V.size, **overrides)).eval()
    with torch.no_grad():  # norms at 1 would hide a mix-up of norm weights: make them differ
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    save_checkpoint(tmp_path / "run", model, V, TOK)
    return model


class GrammarProcessor(LogitsProcessor):
    """smalto's decoding grammar for transformers' generate, so both decode under the same rules."""

    def __init__(self, prompt_len: int):
        self.grammar, self.prompt_len = FormatState(V, [[V.bos]], Allowed(items=("image",))), prompt_len

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] > self.prompt_len:
            self.grammar.advance(input_ids[:, -1])
        return scores.masked_fill(~self.grammar.mask(), float("-inf"))


@pytest.mark.parametrize("overrides, arch", [({}, "Qwen3ForCausalLM"),
                                             ({"qk_norm": False, "tie_embeddings": False}, "LlamaForCausalLM"),
                                             ({"experts": 4, "active_experts": 2}, "Qwen3MoeForCausalLM")])
def test_transformers_loads_it_and_agrees(tmp_path, overrides, arch):
    model = random_model(tmp_path, **overrides)
    out = export_hf(tmp_path / "run", tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == arch and hf.dtype == torch.float32
    assert sum(p.numel() for p in hf.parameters()) == model.num_params()

    codes = torch.randint(0, V.ranges["image"].size, (8, 8))
    text = TOK.text.encode("how many red circles are there?")
    mixed = torch.tensor([caption_prompt(V, codes)[:-1] + text + [V.assistant] + text[:5]])  # text + image
    with torch.no_grad():
        torch.testing.assert_close(hf(mixed).logits, model(mixed).logits, atol=1e-4, rtol=0)

    prompt = mixed[0, :-5].tolist()
    ours = Engine(model, V).generate([prompt], 40, allowed=Allowed(items=("image",)))[0].tokens
    theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False, eos_token_id=V.eos,
                         pad_token_id=V.pad, logits_processor=LogitsProcessorList([GrammarProcessor(len(prompt))]))
    theirs = theirs[0, len(prompt):].tolist()
    assert ours == theirs[:len(ours)] and len(ours) > 5


def test_the_tokenizer_is_the_unified_vocabulary(tmp_path):
    random_model(tmp_path)
    out = export_hf(tmp_path / "run", tmp_path / "hf")
    hf_tok = AutoTokenizer.from_pretrained(out)
    text = "a small red circle at the top left"
    assert hf_tok.encode(text, add_special_tokens=False) == TOK.text.encode(text)
    assert len(hf_tok) == V.size
    last = V.ranges["image"].size - 1
    assert hf_tok.convert_ids_to_tokens([V.text_size, V.size - 1]) == ["<|img_0|>", f"<|img_{last}|>"]
    assert (hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id) == (V.bos, V.eos, V.pad)
    chat = hf_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert hf_tok.encode(chat, add_special_tokens=False) == [V.bos, V.user, *TOK.text.encode("hi"), V.assistant]
    assert (out / "image_tokenizer" / "image.safetensors").exists()
    assert "image_tokenizer" in (out / "README.md").read_text()


def test_cli_export_and_its_errors(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "smalto", "export", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)

    r = run("--out", "hf", "--dtype", "bf16")
    assert r.returncode == 0, r.stderr
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "hf").dtype == torch.bfloat16
    again = run("--out", "hf")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    missing = run("--model", "nowhere", "--out", "x")
    assert missing.returncode == 2 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr
