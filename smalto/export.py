"""Export to Hugging Face `transformers`: a folder `AutoModelForCausalLM.from_pretrained` loads with
no custom code (Qwen3ForCausalLM, or LlamaForCausalLM for a model without QK-norm), so the decoder
runs on the engines that read that format (transformers, vLLM, ...).

The exported tokenizer is the unified vocabulary: the text BPE's ids, then one added token per
image code (`<|img_0|>` ... `<|img_K-1|>`), in the same order as smalto's ids. Turning pixels into
those codes and back still needs smalto's image tokenizer; it is copied to `image_tokenizer/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer

from smalto import __version__, atomic, options
from smalto.adapters import load_adapter, merge
from smalto.checkpoint import load_checkpoint, save_checkpoint
from smalto.errors import SmaltoError
from smalto.model import Transformer
from smalto.paths import inside
from smalto.format import Vocab
from smalto.tokenizers import Tokenizers

# smalto's parameter names -> transformers' (per layer, after "layers.{i}."); the fused
# projections are split along their output rows.
LAYER_NAMES = {
    "input_norm.weight": "input_layernorm.weight",
    "attn.qkv_proj.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "attn.q_norm.weight": "self_attn.q_norm.weight",
    "attn.k_norm.weight": "self_attn.k_norm.weight",
    "post_attn_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate_up_proj.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "mlp.down_proj.weight": "mlp.down_proj.weight",
    # mixture of experts: Qwen3-MoE stores the experts stacked, as smalto does
    "mlp.router.weight": "mlp.gate.weight",
    "mlp.gate_up_proj": "mlp.experts.gate_up_proj",
    "mlp.down_proj": "mlp.experts.down_proj",
}


def hf_config(model: Transformer, vocab: Vocab, dtype: torch.dtype) -> dict:
    cfg = model.cfg
    if cfg.experts and not cfg.qk_norm:
        raise SmaltoError("a mixture of experts exports as Qwen3-MoE, which has QK-norm; this model has none")
    arch, model_type = ("Qwen3MoeForCausalLM", "qwen3_moe") if cfg.experts else \
        ("Qwen3ForCausalLM", "qwen3") if cfg.qk_norm else ("LlamaForCausalLM", "llama")
    config = {
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.mlp_hidden,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,  # transformers < 5
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},  # transformers >= 5
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": vocab.bos,
        "eos_token_id": vocab.eos,
        "pad_token_id": vocab.pad,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "use_cache": True,
    }
    if cfg.qk_norm:
        config.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layers)
    if cfg.experts:  # every layer sparse, top-k probabilities renormalised, as smalto.model.moe
        config.update(num_experts=cfg.experts, num_experts_per_tok=cfg.active_experts,
                      moe_intermediate_size=cfg.mlp_hidden, decoder_sparse_step=1, mlp_only_layers=[],
                      norm_topk_prob=True, router_aux_loss_coef=cfg.balance_weight, output_router_logits=False)
    return config


def hf_state_dict(model: Transformer, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    c = model.cfg
    rows = {"attn.qkv_proj.weight": [c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim],
            "mlp.gate_up_proj.weight": [c.mlp_hidden, c.mlp_hidden]}
    out = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm.weight}
    for name, tensor in model.layers.state_dict().items():
        index, rest = name.split(".", 1)
        if rest not in LAYER_NAMES:
            raise SmaltoError(f"no transformers name for the parameter layers.{name}")
        names = LAYER_NAMES[rest]
        parts = tensor.split(rows[rest]) if isinstance(names, tuple) else (tensor,)
        for hf_name, part in zip((names,) if isinstance(names, str) else names, parts, strict=True):
            out[f"model.layers.{index}.{hf_name}"] = part
    if not model.cfg.tie_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    return {k: v.detach().to(dtype).contiguous() for k, v in out.items()}


def unified_tokenizer(tokenizers: Tokenizers, vocab: Vocab) -> Tokenizer:
    """The text BPE with the image codes appended as special tokens (ids text_size ...), then a
    model that hears' audio codes (`<|aud_0|>` ...: each level's 256 in turn)."""
    tok = Tokenizer.from_str(tokenizers.text.tokenizer.to_str())
    if tok.get_vocab_size() != vocab.text_size:
        raise SmaltoError(f"the text tokenizer has {tok.get_vocab_size()} ids, the model expects {vocab.text_size}")
    for name, prefix in (("image", "img"), ("audio", "aud")):
        if name in vocab.ranges:
            span = vocab.ranges[name]
            tok.add_special_tokens([AddedToken(f"<|{prefix}_{i}|>", special=True) for i in range(span.size)])
            if tok.token_to_id(f"<|{prefix}_{span.size - 1}|>") != span.stop - 1:
                raise SmaltoError(f"{name} tokens did not land on the model's {name} ids")
    if tok.get_vocab_size() != vocab.size:
        raise SmaltoError(f"the exported tokenizer has {tok.get_vocab_size()} ids, the model {vocab.size}")
    return tok


CHAT_TEMPLATE = (
    "<|bos|>{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|eos|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def pack(src: str | Path, dst: str | Path, dtype: torch.dtype | None = torch.bfloat16,
         draw: dict | None = None, adapter: str | Path | None = None) -> Path:
    """An inference-only copy of a run: no optimizer state, weights in `dtype`, optional drawing
    defaults (guidance, temperature, ...) stored for `smalto.load` to use; with a LoRA `adapter`
    trained on it, merged into the weights (and its training config recorded as the model's)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and not (dst / "meta.json").is_file():
        raise SmaltoError(f"{dst}: exists and is not a checkpoint; refusing to replace it")
    for name, value in (draw or {}).items():
        options.check(name, value)
    model, vocab, tokenizers, meta = load_checkpoint(src)
    if adapter is not None:
        meta = {**meta, **{k: v for k, v in load_adapter(model, vocab, adapter).items()
                           if k in ("step", "train", "capabilities", "streams")}}
        merge(model)
    extra = {k: meta[k] for k in ("step", "train", "capabilities", "streams") if k in meta}
    extra["draw"] = {**meta.get("draw", {}), **(draw or {})}
    files = {}
    for name in ("log.jsonl", "loss.png", "samples.png"):
        if (file := inside(src, name, "file")).is_file():
            files[name] = file.read_bytes()
    return save_checkpoint(dst, model, vocab, tokenizers, extra=extra, dtype=dtype, files=files)


def export_hf(model_dir: str | Path, out: str | Path, dtype: torch.dtype = torch.float32, force: bool = False,
              adapter: str | Path | None = None) -> Path:
    """Write `out/` (config.json, model.safetensors, tokenizer files, image_tokenizer/, README.md);
    with a LoRA `adapter`, merged into the weights first."""
    model, vocab, tokenizers, meta = load_checkpoint(
        model_dir, "tokens", "transformers' Qwen3 reads token ids only, and has no place for a vision tower or "
        "cross-attention blocks. Serve it with `smalto serve`")
    if model.cfg.depth_levels:
        raise SmaltoError(f"{model_dir}: its sounds' finer levels come from a depth head (the depth pattern, "
                          f"docs/audio.md), which no transformers architecture has; serve it with `smalto serve`, "
                          f"or train its sounds flat or delayed to export")
    if model.cfg.rope != "1d":
        raise SmaltoError(f"{model_dir}: a {model.cfg.rope} model does not export to transformers: the text-only "
                          f"architectures smalto maps onto (Qwen3) take one position per token, and the ones with "
                          f"M-RoPE (Qwen2-VL, Qwen3-VL) build positions from their own vision inputs, not from "
                          f"smalto's token stream; a loader would silently number this model's positions in 1-D "
                          f"(docs/video.md). Serve it with `smalto serve`, or train a --rope 1d model to export.")
    if adapter is not None:
        load_adapter(model, vocab, adapter)
        merge(model)
    config = hf_config(model, vocab, dtype)
    tok = unified_tokenizer(tokenizers, vocab)
    names = {name: tok.id_to_token(getattr(vocab, name)) for name in ("bos", "eos", "pad")}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": names["bos"], "eos_token": names["eos"], "pad_token": names["pad"],
        "model_max_length": model.cfg.max_seq_len, "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
    }
    generation = {"bos_token_id": vocab.bos, "eos_token_id": vocab.eos, "pad_token_id": vocab.pad}
    with atomic.directory(out, overwrite=force) as tmp:
        save_file(hf_state_dict(model, dtype), tmp / "model.safetensors", metadata={"format": "pt"})
        for name, content in (("config.json", config), ("generation_config.json", generation),
                              ("tokenizer_config.json", tokenizer_config),
                              ("special_tokens_map.json", {f"{k}_token": v for k, v in names.items()})):
            (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
        tok.save(str(tmp / "tokenizer.json"))
        tokenizers.copy_to(tmp / "image_tokenizer")
        (tmp / "README.md").write_text(_readme(config, vocab, meta))
    return Path(out)


def _readme(config: dict, vocab: Vocab, meta: dict) -> str:
    arch = config["architectures"][0]
    drawn = vocab.modalities[vocab.drawn("image")]
    drawing = (f"drawing is `<|bos|><|user|> prompt <|assistant|><|reserved_1|>` followed, for each of the "
               f"{len(drawn.blocks)} cells in raster order, by {drawn.words} words naming what the cell holds "
               f"(\"2 small red circle\", \"1---\" when empty) and the codes of the cell's patches (raster "
               f"indices {[list(b) for b in drawn.blocks[:2]]}, ...), then `<|eoi|>`") if drawn.blocks else \
        "drawing is `<|bos|><|user|> prompt <|assistant|><|boi|>` followed by the image's codes"
    sounds = ""
    if vocab.sound is not None:
        span, (frames, levels) = vocab.ranges["audio"], vocab.sound
        sounds = (f"\n- ids {span.start} .. {span.stop - 1}: audio codes, `<|aud_0|>` .. `<|aud_{span.size - 1}|>`, "
                  f"{levels} levels of {span.size // levels} in turn. A sound is `<|boa|>` + its {frames} codec "
                  f"frames' codes ({vocab.pattern}; docs/audio.md) + `<|eoa|>`; smalto's audio codec turns them "
                  f"into a waveform.")
        slots = vocab.modalities[vocab.drawn("audio")]
        if slots.blocks:
            sounds += (f" Making a sound, the model writes `<|reserved_0|>`, then for each of the {len(slots.blocks)} "
                       f"cells the same {slots.words} words as a drawing and the codes of the cell's time slot, "
                       f"then `<|eoa|>`.")
    return f"""# smalto model, exported for transformers

Exported by smalto {__version__} from a `{meta.get('train', {}).get('preset') or 'smalto'}` model at step
{meta.get('step', '?')}: a `{arch}` decoder, {config['num_hidden_layers']} layers, hidden size
{config['hidden_size']}, a unified vocabulary of {vocab.size} ids.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("this-folder")
tokenizer = AutoTokenizer.from_pretrained("this-folder")
```

## The vocabulary

- ids 0 .. {vocab.text_size - 1}: the byte-level BPE for text; its first ids are the special tokens
  (`<|bos|>` {vocab.bos}, `<|eos|>` {vocab.eos}, `<|pad|>` {vocab.pad}, `<|boi|>` {vocab.boi},
  `<|eoi|>` {vocab.eoi}, `<|user|>` {vocab.user}, `<|assistant|>` {vocab.assistant}).
- ids {vocab.text_size} .. {vocab.ranges['image'].stop - 1}: image codes, `<|img_0|>` ..
  `<|img_{vocab.ranges['image'].size - 1}|>`.
  An image is `<|boi|>` + {vocab.image_tokens} codes (row-major) + `<|eoi|>`.{sounds}

Sequences are short chats: `<|bos|><|user|> [image] question <|assistant|> answer <|eos|>`;
{drawing} (the chat template builds the text part).

## Images

The codes are an image tokenizer's (a convolutional encoder, a codebook, a decoder), which
transformers does not have: turning pixels into codes and codes into pixels needs smalto,
with the tokenizer copied in `image_tokenizer/`:

```python
from smalto.tokenizers import load_tokenizers
tok = load_tokenizers("this-folder/image_tokenizer")
codes = tok.image.encode(images)          # uint8 [B, H, W, 3] -> [B, 8, 8]; add {vocab.text_size} for ids
images = tok.image.decode(codes)          # codes (ids - {vocab.text_size}) -> uint8 images
```
"""
