"""The decoder's shape: a frozen config, and named presets from smoke-test size to GPU size."""

from __future__ import annotations

from dataclasses import dataclass


MAX_LAYERS, MAX_CONTEXT = 1024, 2**20
ROPES = ("1d", "mrope", "interleaved")
FUSIONS = ("tokens", "projector", "xattn")


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
    # Rotary positions: "1d" reads the running index; "mrope" (Qwen2-VL) gives contiguous
    # sections of the frequencies to time, row and column; "interleaved" (Qwen3-VL) alternates
    # the three axes across frequencies. 3-axis models need the format's "grid" position rule.
    rope: str = "1d"
    norm_eps: float = 1e-6
    qk_norm: bool = True
    tie_embeddings: bool = True
    # Mixture of experts (smalto.model.moe): 0 keeps the dense SwiGLU MLP; E routes each token to
    # its `active_experts` best of E experts, each of width mlp_hidden.
    experts: int = 0
    active_experts: int = 2
    balance_weight: float = 0.01  # load-balancing loss (Switch Transformer)
    z_weight: float = 0.001  # router z-loss (ST-MoE)
    # How pictures the model reads reach it (smalto.model.fusion): "tokens", their discrete codes in
    # the stream; "projector", a small ViT's features in the codes' places (LLaVA); "xattn", gated
    # cross-attention to those features before every `xattn_every`-th layer (Flamingo), the picture
    # a single marker in the stream. Drawing always writes codes.
    fusion: str = "tokens"
    vision_dim: int = 128  # the ViT's width (projector and xattn)
    vision_layers: int = 2
    vision_heads: int = 4
    patch: int = 4  # the ViT reads patches of patch x patch pixels: one feature per image code
    image_size: int = 32
    xattn_every: int = 2
    # The ViT's stem: None, a linear map of each patch (from scratch); or the image tokenizer's
    # encoder config (its conv encoder, weights copied at the start of training).
    vision_encoder: dict | None = None
    # A depth head (smalto.model.depth, Moshi's depth transformer) for sounds in the depth pattern:
    # the finer residual levels of a frame, depth_levels of them (0: no head), each of depth_codes,
    # level 1's codes from id depth_start on (where a tied head finds their embeddings).
    depth_levels: int = 0
    depth_codes: int = 256
    depth_layers: int = 1
    depth_start: int = 0

    def __post_init__(self) -> None:
        # Bounds that keep a config read from someone else's meta.json from allocating without
        # limit (the weights themselves are checked against the file, see smalto.weights).
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden", "max_seq_len",
                     "vision_dim", "vision_layers", "vision_heads", "patch", "image_size", "xattn_every",
                     "depth_codes", "depth_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.depth_levels, bool) or not isinstance(self.depth_levels, int) or \
                not 0 <= self.depth_levels <= 16 or self.depth_layers > MAX_LAYERS:
            raise ValueError(f"depth_levels must be an integer 0 .. 16 and depth_layers at most {MAX_LAYERS}, got "
                             f"{self.depth_levels!r} and {self.depth_layers!r}")
        if self.depth_levels and not 0 <= self.depth_start <= self.vocab_size - self.depth_levels * self.depth_codes:
            raise ValueError(f"a depth head's {self.depth_levels} x {self.depth_codes} codes from id "
                             f"{self.depth_start} must lie inside the vocabulary of {self.vocab_size}")
        if self.n_layers > MAX_LAYERS or self.max_seq_len > MAX_CONTEXT:
            raise ValueError(f"n_layers must be at most {MAX_LAYERS} and max_seq_len at most {MAX_CONTEXT}, got "
                             f"{self.n_layers} and {self.max_seq_len}")
        if self.experts and not 1 <= self.active_experts <= self.experts or self.experts == 1 or self.experts < 0:
            raise ValueError(f"experts must be 0 (dense) or at least 2, and active_experts between 1 and experts, "
                             f"got {self.experts} and {self.active_experts}")
        if self.rope not in ROPES:
            raise ValueError(f"rope must be one of {', '.join(ROPES)}, got {self.rope!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.vision_dim % self.vision_heads or self.image_size % self.patch or self.vision_layers > MAX_LAYERS:
            raise ValueError(f"vision_dim ({self.vision_dim}) must divide by vision_heads ({self.vision_heads}), "
                             f"image_size ({self.image_size}) by patch ({self.patch}), and vision_layers be at "
                             f"most {MAX_LAYERS}")
        if self.vision_encoder is not None:  # (the tokenizers' config, read here to check a meta.json's)
            from smalto.tokenizers.image import ImageTokenizerConfig

            encoder = ImageTokenizerConfig(**self.vision_encoder)
            if (encoder.image_size, encoder.downsample) != (self.image_size, self.patch):
                raise ValueError(f"the vision encoder reads {encoder.image_size}-pixel images into "
                                 f"{encoder.downsample}-pixel cells, not {self.image_size} into {self.patch}")
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(f"dim ({self.dim}) must divide by n_heads ({self.n_heads}), "
                             f"and n_heads by n_kv_heads ({self.n_kv_heads})")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def position_rule(self) -> str:
        """The format's position rule this model reads (`smalto.format.grammar`)."""
        return "index" if self.rope == "1d" else "grid"


# Named sizes. shapes-micro is for smoke tests, shapes-tiny trains on a laptop CPU in half an
# hour; the others are meant for GPUs.
PRESETS: dict[str, dict] = {
    "shapes-micro": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=192),
    "shapes-tiny": dict(dim=256, n_layers=6, n_heads=8, n_kv_heads=4, mlp_hidden=704),
    "shapes-small": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=4, mlp_hidden=1408),
    "base": dict(dim=1024, n_layers=16, n_heads=16, n_kv_heads=8, mlp_hidden=2816, max_seq_len=2048),
    "large": dict(dim=2048, n_layers=24, n_heads=16, n_kv_heads=8, mlp_hidden=5632, max_seq_len=4096),
}


def preset(name: str, vocab_size: int, experts: int = 0, active_experts: int = 2, **overrides) -> ModelConfig:
    """A named size; with `experts`, a mixture of experts with the preset's active parameters (each
    expert is 1/active_experts as wide as the dense MLP, so a token passes through as many weights)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    sizes = dict(PRESETS[name])
    if experts:
        sizes |= dict(experts=experts, active_experts=active_experts, mlp_hidden=sizes["mlp_hidden"] // active_experts)
    return ModelConfig(vocab_size=vocab_size, **{**sizes, **overrides})
