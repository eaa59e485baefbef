"""The decoder: one Transformer over one stream of tokens. It knows nothing of tasks or images.

    logits = model(ids, positions, cache=None)   # ids, positions: int64 [B, T] -> [B, T, V]

Qwen3-style blocks (pre-norm RMSNorm, rotary positions, grouped-query attention through
`scaled_dot_product_attention`, per-head RMSNorm on queries and keys, SwiGLU MLP), so it maps
onto a stock `transformers` architecture (`smalto.export`; q/k/v and gate/up are stored fused).
QK-norm keeps attention logits bounded, which Chameleon found necessary for stable training on
mixed text and image tokens.

The KV cache is preallocated. Rows of a batch may be left-padded to a common length: the cache
remembers which slots hold real tokens, and the attention mask hides the rest. A one-token
decoding step has fixed shapes, so `compile_decoding()` can compile it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


MAX_LAYERS, MAX_CONTEXT = 1024, 2**20


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    dim: int = 256
    n_layers: int = 6
    n_heads: int = 8
    n_kv_heads: int = 4
    mlp_hidden: int = 704  # SwiGLU width; ~8/3 dim, rounded to a multiple of 64
    max_seq_len: int = 160
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    qk_norm: bool = True
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        # Bounds that keep a config read from someone else's meta.json from allocating without
        # limit (the weights themselves are checked against the file, see smalto.weights).
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden", "max_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_layers > MAX_LAYERS or self.max_seq_len > MAX_CONTEXT:
            raise ValueError(f"n_layers must be at most {MAX_LAYERS} and max_seq_len at most {MAX_CONTEXT}, got "
                             f"{self.n_layers} and {self.max_seq_len}")
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(f"dim ({self.dim}) must divide by n_heads ({self.n_heads}), "
                             f"and n_heads by n_kv_heads ({self.n_kv_heads})")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


# Named sizes. shapes-micro is for smoke tests, shapes-tiny trains on a laptop CPU in half an
# hour; the others are meant for GPUs.
PRESETS: dict[str, dict] = {
    "shapes-micro": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=192),
    "shapes-tiny": dict(dim=256, n_layers=6, n_heads=8, n_kv_heads=4, mlp_hidden=704),
    "shapes-small": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=4, mlp_hidden=1408),
    "base": dict(dim=1024, n_layers=16, n_heads=16, n_kv_heads=8, mlp_hidden=2816, max_seq_len=2048),
    "large": dict(dim=2048, n_layers=24, n_heads=16, n_kv_heads=8, mlp_hidden=5632, max_seq_len=4096),
}


def preset(name: str, vocab_size: int, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return ModelConfig(vocab_size=vocab_size, **{**PRESETS[name], **overrides})


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # in x's dtype: under autocast the q/k norms see bf16, and mixed dtypes miss the fused kernel
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


def rope_tables(cfg: ModelConfig) -> tuple[Tensor, Tensor]:
    """cos, sin [max_seq_len, head_dim/2] for rotary positions."""
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim)
    angles = torch.outer(torch.arange(cfg.max_seq_len).float(), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, H, T, D]; cos, sin [B, 1, T, D/2]. Rotates the two halves (the HF convention)."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)


class KVCache:
    """Preallocated keys and values for every layer, plus which slots hold real tokens.

    New tokens are written into slots by index and attention always spans the whole cache under
    a mask, so a decoding step has the same shapes every time: what lets `torch.compile` turn it
    into one fixed program (`Transformer.compile_decoding`).
    """

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int | None = None, dtype=torch.float32,
                 device: torch.device | str = "cpu"):
        self.max_len = max_len or cfg.max_seq_len
        shape = (batch, cfg.n_kv_heads, self.max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.valid = torch.zeros(batch, self.max_len, dtype=torch.bool, device=device)
        self.length = 0

    def claim(self, t: int, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The next t slots [t], and the attention mask [B, 1, t, max_len] for tokens put there:
        each sees the real tokens up to itself, and always itself (a padding row then attends to
        something, so no NaNs)."""
        if self.length + t > self.max_len:
            raise ValueError(f"KV cache full: {self.length} + {t} > {self.max_len}")
        device = self.valid.device
        slots = torch.arange(self.length, self.length + t, device=device)
        self.valid[:, self.length:self.length + t] = True if valid is None else valid
        self.length += t
        keys = torch.arange(self.max_len, device=device)
        mask = ((keys <= slots[:, None]) & self.valid[:, None, :]) | (keys == slots[:, None])
        return slots, mask.unsqueeze(1)

    def reorder(self, rows: Tensor) -> None:
        """Keep (and duplicate) batch rows, e.g. when beams are re-ranked."""
        self.k = [k[rows] for k in self.k]
        self.v = [v[rows] for v in self.v]
        self.valid = self.valid[rows]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        # q, k and v in one matmul: at decode time a token's step is a chain of small matmuls,
        # and each one costs a call whatever its size.
        self.qkv_proj = nn.Linear(cfg.dim, (cfg.n_heads + 2 * cfg.n_kv_heads) * hd, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=False)
        self.q_norm = RMSNorm(hd, cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(hd, cfg.norm_eps) if cfg.qk_norm else nn.Identity()

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, kv_cache: tuple[Tensor, Tensor, Tensor] | None,
                mask: Tensor | None) -> Tensor:
        """kv_cache: (this layer's keys, values, the slots to write this step's into), or None."""
        b, t, _ = x.shape
        hd, h, kv = self.cfg.head_dim, self.cfg.n_heads, self.cfg.n_kv_heads
        q, k, v = self.qkv_proj(x).view(b, t, h + 2 * kv, hd).split((h, kv, kv), dim=2)
        q = apply_rope(self.q_norm(q).transpose(1, 2), cos, sin)
        k = apply_rope(self.k_norm(k).transpose(1, 2), cos, sin)
        v = v.transpose(1, 2)
        dtype = q.dtype
        if kv_cache is not None:
            # The cache is float32 whatever the weights: CPU attention for one query per row runs
            # several times faster in float32 than in bf16 (decoding at batch 16: 93 against 476 us);
            # a prompt's many queries are faster in the weights' dtype.
            keys, values, slots = kv_cache
            keys.index_copy_(2, slots, k.to(keys.dtype))
            values.index_copy_(2, slots, v.to(values.dtype))
            if t == 1:
                q, k, v = q.to(keys.dtype), keys, values
            else:
                k, v = keys.to(dtype), values.to(dtype)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=h != kv)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=h != kv)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, h * hd).to(dtype))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.dim, 2 * cfg.mlp_hidden, bias=False)  # one matmul, as qkv
        self.down_proj = nn.Linear(cfg.mlp_hidden, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.post_attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, kv_cache: tuple[Tensor, Tensor, Tensor] | None,
                mask: Tensor | None) -> Tensor:
        x = x + self.attn(self.input_norm(x), cos, sin, kv_cache, mask)
        return x + self.mlp(self.post_attn_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._compiled_step = None
        self.apply(self._init)
        for block in self.layers:  # residual projections scaled down with depth (GPT-2)
            for proj in (block.attn.o_proj, block.mlp.down_proj):
                nn.init.normal_(proj.weight, std=0.02 / (2 * cfg.n_layers) ** 0.5)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, ids: Tensor, positions: Tensor | None = None, cache: KVCache | None = None,
                valid: Tensor | None = None) -> Tensor:
        """ids [B, T] -> logits [B, T, V].

        positions: [B, T] (default 0..T-1). With a cache, ids continue what it holds and
        `valid` [B, T] marks real tokens (False for left padding; default all True).
        """
        b, t = ids.shape
        if positions is None:
            start = cache.length if cache is not None else 0
            positions = torch.arange(start, start + t, device=ids.device).expand(b, t)
        if positions.max() >= self.cfg.max_seq_len:
            raise ValueError(f"position {int(positions.max())} is past max_seq_len {self.cfg.max_seq_len}")
        if cache is None:
            return self.layers_forward(ids, positions, None, None, None, None)
        slots, mask = cache.claim(t, valid)
        run = self._compiled_step if t == 1 and self._compiled_step is not None else self.layers_forward
        return run(ids, positions, cache.k, cache.v, slots, mask)

    def layers_forward(self, ids: Tensor, positions: Tensor, keys: list[Tensor] | None,
                       values: list[Tensor] | None, slots: Tensor | None, mask: Tensor | None) -> Tensor:
        """The network itself, on tensors only (what `compile_decoding` compiles)."""
        cos = self.rope_cos[positions].unsqueeze(1)
        sin = self.rope_sin[positions].unsqueeze(1)
        x = self.embed(ids)
        for i, block in enumerate(self.layers):
            x = block(x, cos, sin, None if keys is None else (keys[i], values[i], slots), mask)
        return self.lm_head(self.norm(x))

    def compile_decoding(self, enabled: bool = True) -> None:
        """Compile the one-token decoding step with torch.compile (inductor), so it runs as one
        generated program instead of hundreds of small ops. Its shapes depend only on the batch
        size and the cache length: the first call compiles for them (seconds); a second batch
        size or cache length recompiles once with those sizes symbolic, then nothing more.
        Prefill stays eager. enabled=False goes back to the eager step."""
        self._compiled_step = torch.compile(self.layers_forward) if enabled else None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
