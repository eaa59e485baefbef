"""The decoder: one Transformer over one stream of tokens. It knows nothing of tasks or images.

    out = model(ids, positions, cache=None)   # ids [B, T], positions [B, 3, T] -> out.logits, out.aux_loss

or `model(embeds=...)` with input embeddings [B, T, dim] in place of ids, so that continuous
features can be spliced into the stream. A model of another fusion design than discrete tokens
(`cfg.fusion`, smalto.model.fusion) also takes the pixels of the pictures its stream reads
(`images=`): the projector splices their features in, xattn attends to them. The auxiliary
loss (zero for dense layers) is what layers such as mixture-of-experts routers add to the
training objective. A model with a depth head (`cfg.depth_levels`, `DepthHead`) also returns its
final states, from which the head predicts a sound frame's finer codes.

Qwen3-style blocks (pre-norm RMSNorm, rotary positions, grouped-query attention through
`scaled_dot_product_attention`, per-head RMSNorm on queries and keys, SwiGLU MLP), so it maps
onto a stock `transformers` architecture (`smalto.export`; q/k/v and gate/up are stored fused).
QK-norm keeps attention logits bounded, which Chameleon found necessary for stable training on
mixed text and image tokens.

The KV cache is preallocated. Rows of a batch may be left-padded to a common length: the cache
remembers which slots hold real tokens, and the attention mask hides the rest. A one-token
decoding step has fixed shapes, so the engine can compile it (`Engine.compile`); the model has
no device policy of its own: dtypes, caches and compilation are chosen by whoever runs it.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smalto.model.config import ModelConfig
from smalto.model.fusion import GatedCrossAttention, Images, VisionTower
from smalto.model.kv_cache import KVCache
from smalto.model.layers import MLP, RMSNorm
from smalto.model.moe import MoE


def rope_tables(cfg: ModelConfig) -> tuple[Tensor, Tensor]:
    """cos, sin [max_seq_len, head_dim/2] for rotary positions."""
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim)
    angles = torch.outer(torch.arange(cfg.max_seq_len).float(), inv_freq)
    return angles.cos(), angles.sin()


def rope_axes(cfg: ModelConfig) -> Tensor | None:
    """Which position axis (0 time, 1 row, 2 column) each rotary frequency reads; None for 1-D.

    mrope: contiguous sections, time taking a quarter of the frequencies (the fastest) and rows and
    columns three eighths each (Qwen2-VL's 16/24/24 of 64); interleaved: time, row, column, time,
    ... (Qwen3-VL), so every axis gets fast and slow frequencies alike."""
    n = cfg.head_dim // 2
    if cfg.rope == "1d":
        return None
    if cfg.rope == "interleaved":
        return torch.arange(n) % 3
    spatial = 3 * n // 8
    return torch.tensor([0] * (n - 2 * spatial) + [1] * spatial + [2] * spatial)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, H, T, D]; cos, sin [B, 1, T, D/2]. Rotates the two halves (the HF convention)."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)


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
        cpu = q.device.type == "cpu"
        if cpu:
            # CPU attention in bf16 is the slow path: over a training batch (32 x 100 tokens) its
            # forward + backward took 44 ms against 15 ms in float32, a third of the whole step.
            q, k, v = q.float(), k.float(), v.float()
        # (CPU autocast would cast them back to bf16; the check keeps the decode step free of it)
        with torch.autocast("cpu", enabled=False) if cpu and torch.is_autocast_enabled("cpu") else nullcontext():
            if mask is None:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=h != kv)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=h != kv)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, h * hd).to(dtype))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.post_attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MoE(cfg) if cfg.experts else MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, kv_cache: tuple[Tensor, Tensor, Tensor] | None,
                mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """-> (x, this block's auxiliary loss: None for a dense MLP)."""
        x = x + self.attn(self.input_norm(x), cos, sin, kv_cache, mask)
        if isinstance(self.mlp, MoE):
            y, aux = self.mlp(self.post_attn_norm(x))
            return x + y, aux
        return x + self.mlp(self.post_attn_norm(x)), None


class DepthHead(nn.Module):
    """A sound frame's finer residual codes, one after another (Moshi's depth transformer, small).

    In the depth pattern a sound is a token per codec frame, its coarsest code; the frame's finer
    codes ride along with it (`format.Carrying`). The decoder's state at the step that predicts frame t
    sees frames before t; the depth head turns it into frame t's finer codes, level by level, each
    one seeing the levels before it in the same frame:

        position k (0 .. L-1):  in(state) + embed(code of level k) + level[k]  ->  code of level k + 1

    Causal attention over those L positions, so level k + 1 is conditioned on levels 0 .. k (the
    delay pattern gets the same conditioning by predicting level k a step later). The code
    embeddings are the decoder's own (its audio range); each level has its own output head over
    that level's codes, tied to those codes' embeddings when the decoder ties its own head (so a
    finer code's embedding learns from being predicted, as in the delay pattern, not only from
    being read). Tiny: a frame holds at most a few levels, so it runs without a cache, and a
    decoding step recomputes it for each level (L <= 3 positions).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.levels, self.codes = cfg.depth_levels, cfg.depth_codes
        small = ModelConfig(vocab_size=1, dim=cfg.dim, n_layers=cfg.depth_layers, n_heads=cfg.n_heads,
                            n_kv_heads=cfg.n_kv_heads, mlp_hidden=cfg.mlp_hidden, max_seq_len=cfg.depth_levels,
                            norm_eps=cfg.norm_eps, qk_norm=cfg.qk_norm)
        self.input = nn.Linear(cfg.dim, cfg.dim, bias=False)  # the decoder's state, read anew
        self.level = nn.Parameter(torch.zeros(cfg.depth_levels, cfg.dim))
        self.layers = nn.ModuleList(Block(small) for _ in range(cfg.depth_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        # (tied: the decoder passes its embedding rows of levels 1 .. L, `Transformer.depth_logits`)
        self.heads = None if cfg.tie_embeddings else nn.Parameter(
            torch.randn(cfg.depth_levels, cfg.depth_codes, cfg.dim) * 0.02)
        cos, sin = rope_tables(small)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, state: Tensor, codes: Tensor, heads: Tensor | None = None) -> Tensor:
        """state [..., dim] (the decoder's final hidden state, normalised), codes [..., k, dim]
        (embeddings of the frame's levels 0 .. k-1, k <= levels) -> logits [..., k, codes]:
        position j's over level j + 1's codes. heads [levels, codes, dim]: the tied output heads."""
        heads = self.heads if heads is None else heads
        lead, k = codes.shape[:-2], codes.shape[-2]
        x = (self.input(state)[..., None, :] + codes + self.level[:k].to(codes.dtype)).reshape(-1, k, codes.shape[-1])
        cos, sin = self.rope_cos[:k][None, None], self.rope_sin[:k][None, None]
        for block in self.layers:
            x, _ = block(x, cos, sin, None, None)
        x = self.norm(x)
        return torch.einsum("nkd,kcd->nkc", x, heads[:k].to(x.dtype)).reshape(*lead, k, self.codes)


class Output(NamedTuple):
    logits: Tensor  # [B, T, V]
    aux_loss: Tensor  # scalar: what the layers add to the training loss (0 for dense layers)
    hidden: Tensor | None = None  # [B, T, dim]: the final normalised states (a model with a depth head)
    depth: Tensor | None = None  # [N, L, depth_codes]: the depth head's logits for the N frames named


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.vision = VisionTower(cfg) if cfg.fusion != "tokens" else None
        self.xattn = nn.ModuleList(GatedCrossAttention(cfg) for _ in range(0, cfg.n_layers, cfg.xattn_every)) \
            if cfg.fusion == "xattn" else None
        self.depth = DepthHead(cfg) if cfg.depth_levels else None
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        # Prompt tuning's learned embeddings (smalto.adapters.PromptTokens), put before every sequence.
        self.prompt: nn.Module | None = None
        cos, sin = rope_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("rope_axes", rope_axes(cfg), persistent=False)
        self.apply(self._init)
        for block in self.layers:  # residual projections scaled down with depth (GPT-2; MoE does its own)
            for proj in (block.attn.o_proj, *([] if cfg.experts else [block.mlp.down_proj])):
                nn.init.normal_(proj.weight, std=0.02 / (2 * cfg.n_layers) ** 0.5)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, ids: Tensor | None = None, positions: Tensor | None = None, cache: KVCache | None = None,
                valid: Tensor | None = None, embeds: Tensor | None = None,
                network: Callable[..., Tensor] | None = None, images: Images | None = None,
                extra: Tensor | None = None, depth: Tensor | None = None) -> Output:
        """ids [B, T] (or embeds [B, T, dim]) -> logits [B, T, V] and the auxiliary loss.

        positions: [B, 3, T], (time, row, column) per token as the format assigns them (default:
        the running index on all three); a 1-D rotary model reads row 0. With a cache, the
        tokens continue what it holds and `valid` [B, T] marks real ones (False for left padding).
        network: what runs the layers (default `self.network`; the engine passes a compiled copy).
        images: the pictures the tokens read (projector and xattn designs); with a cache, xattn keeps
        what it needs of them for the decoding steps that follow.
        extra [B, T, width]: ids each token carries beside itself (a delayed sound's finer levels,
        -1 where none), their embeddings added to the token's (MusicGen's summed codebooks).
        depth [B, T, L] (a model with a depth head; training): the ids of the frame each position
        predicts, levels 0 .. L-1 (-1 where it predicts none), for the head to predict levels
        1 .. L from (teacher forcing): `Output.depth`, for the positions that predict a frame only,
        in row-major order (a text position costs the head nothing).
        """
        if (ids is None) == (embeds is None):
            raise ValueError("pass either ids or embeds")
        x = self.embed(ids) if embeds is None else embeds
        if extra is not None:
            x = x + (self.embed(extra.clamp_min(0)) * (extra >= 0)[..., None].to(x.dtype)).sum(-2)
        b, t = x.shape[:2]
        n = self.prompt_tokens
        if positions is None:
            start = cache.length - n * (cache.length > 0) if cache is not None else 0
            positions = torch.arange(start, start + t, device=x.device).expand(b, 3, t)
        first = cache is None or cache.length == 0
        if images is not None and self.vision is None:
            raise ValueError("a tokens model reads pictures as codes in the stream, not as pixels")
        if images is not None and self.xattn is None:
            x = self._splice(x, images)
        if n:  # the learned prompt takes positions 0..n-1 and shifts everything after it
            positions = positions + n
            if first:
                x = torch.cat([self.prompt.embeds.to(x.dtype).expand(b, -1, -1), x], 1)
                positions = torch.cat([torch.arange(n, device=x.device).expand(b, 3, n), positions], 2)
                valid = None if valid is None else torch.cat([valid.new_ones(b, n), valid], 1)
                t += n
        if positions.max() >= self.cfg.max_seq_len:
            raise ValueError(f"position {int(positions.max())} is past max_seq_len {self.cfg.max_seq_len}")
        run = network or self.network
        offset = 0 if cache is None else cache.length
        cross = self._cross(images, cache, offset + n * bool(n and first), offset + torch.arange(t, device=x.device))
        head = self.depth is None  # (the depth head reads the states the logits are made from)
        if cache is None:
            out, aux = run(x, self.rotary(positions), None, None, None, None, head=head, cross=cross)
        else:
            slots, mask = cache.claim(t, valid)
            out, aux = run(x, self.rotary(positions), cache.k, cache.v, slots, mask, head=head, cross=cross)
        if n and first:
            out = out[:, n:]
        hidden, logits = (None, out) if head else (out, self.lm_head(out))
        frames = None
        if depth is not None:
            if self.depth is None:
                raise ValueError("this model has no depth head")
            rows = depth[..., 0] >= 0
            frames = self.depth_logits(hidden[rows], depth[rows])
        return Output(logits, logits.new_zeros(()) if aux is None else aux, hidden, frames)

    def depth_logits(self, state: Tensor, frame: Tensor) -> Tensor:
        """The depth head's logits [..., k, depth_codes] for levels 1 .. k of frames whose ids so far
        are `frame` [..., k] (levels 0 .. k-1), from the decoder's final states [..., dim]."""
        c = self.cfg
        heads = self.embed.weight[c.depth_start:c.depth_start + c.depth_levels * c.depth_codes].view(
            c.depth_levels, c.depth_codes, c.dim) if c.tie_embeddings else None
        return self.depth(state, self.embed(frame), heads)

    def _splice(self, x: Tensor, images: Images) -> Tensor:
        """The projector: each picture's features in place of its codes' embeddings (the tokens
        after its <boi>; any cut off by the end of the sequence are dropped)."""
        rows, _, features = self._features(images)
        cols = images.at[images.at >= 0][:, None] + 1 + torch.arange(features.shape[1], device=x.device)
        keep = cols < x.shape[1]
        return x.index_put((rows[:, None].expand_as(cols)[keep], cols[keep]), features[keep].to(x.dtype))

    def _features(self, images: Images) -> tuple[Tensor, Tensor, Tensor]:
        """(row, index in the row, ViT features [patches, dim]) of every picture given."""
        rows, k = (images.at >= 0).nonzero(as_tuple=True)
        return rows, k, self.vision(images.pixels[rows, k].to(self.embed.weight.dtype))

    def _cross(self, images: Images | None, cache: KVCache | None, shift: int, queries: Tensor):
        """xattn: per block, keys and values of the pictures' features, and which of them each
        query [T] (indices in the cache, or in the sequence) may see -- those of pictures it follows.
        With a cache they are made once, with the prompt, and kept for the steps that follow."""
        if self.xattn is None:
            return None
        if images is not None:
            b, k = images.at.shape
            rows, j, features = self._features(images)
            p = features.shape[1]
            memory = features.new_zeros(b, k, p, features.shape[-1])
            memory[rows, j] = features
            memory = memory.flatten(1, 2)
            # from which index each feature is visible: its picture's start (never, for padding)
            start = torch.where(images.at >= 0, images.at + shift, torch.iinfo(torch.long).max)
            cross = [block.memory(memory) for block in self.xattn], start.repeat_interleave(p, 1)
            if cache is not None:
                cache.cross = cross
        elif cache is not None and cache.cross is not None:
            cross = cache.cross
        else:
            return None
        memory, start = cross
        return memory, (start[:, None, :] <= queries[None, :, None]).unsqueeze(1)

    def rotary(self, positions: Tensor) -> Tensor:
        """What `network` reads of positions [B, 3, T]: row 0 for a 1-D model, all three otherwise."""
        return positions[:, 0] if self.rope_axes is None else positions

    @property
    def prompt_tokens(self) -> int:
        """How many learned embeddings precede every sequence (0 without prompt tuning)."""
        return 0 if self.prompt is None else self.prompt.embeds.shape[0]

    def network(self, x: Tensor, positions: Tensor, keys: list[Tensor] | None, values: list[Tensor] | None,
                slots: Tensor | None, mask: Tensor | None, head: bool = True,
                cross: tuple[list[tuple[Tensor, Tensor]], Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        """The layers on tensors only (what the engine compiles): embeddings [B, T, dim] and
        rotary positions ([B, T] for a 1-D model, [B, 3, T] for a 3-axis one) -> logits and the
        summed auxiliary loss (None if dense).
        head=False: the final normalised hidden states [B, T, dim] instead of logits (probes).
        cross (xattn): each cross-attention block's keys and values, and what each token sees
        [B, 1, T, M]; None when no row reads a picture (the blocks would add exactly 0)."""
        if positions.dim() == 3:  # each frequency reads its own axis
            where = positions[:, self.rope_axes].transpose(1, 2)  # [B, T, head_dim / 2]
            freq = torch.arange(where.shape[-1], device=where.device)
            cos, sin = self.rope_cos[where, freq].unsqueeze(1), self.rope_sin[where, freq].unsqueeze(1)
        else:
            cos, sin = self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)
        total = None
        for i, block in enumerate(self.layers):
            if cross is not None and i % self.cfg.xattn_every == 0:
                x = self.xattn[i // self.cfg.xattn_every](x, *cross[0][i // self.cfg.xattn_every], cross[1])
            x, aux = block(x, cos, sin, None if keys is None else (keys[i], values[i], slots), mask)
            if aux is not None:
                total = aux if total is None else total + aux
        x = self.norm(x)
        return self.lm_head(x) if head else x, total

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
