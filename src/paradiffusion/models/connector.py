"""Connectors: small trainable layers between the LLM's states and the UNet's cross-attention.

The paper feeds the LLM's last hidden states straight into the UNet (`connector: null`, the default). At tiny scale
the UNet's cross-attention has to find the ~20 tokens that name colours, shapes, sizes and cells among the ~150 of a
paragraph, and with a short budget it does not (README, "What we found": a scene list padded to paragraph length with
neutral sentences loses almost all of its text use). A connector is one place to help it:

* `TokenGate`   — a learnt per-token gate g = 2·sigmoid(w·LN(h) + b) on the states, shared by every
  cross-attention layer, head and pixel: it can silence filler tokens for all of them at once (a silenced state
  contributes neither a key nor a value) and amplify the informative ones. Starts at g = 1 (w = 0, b = 0).
* `TextRefiner` — bidirectional pre-norm transformer blocks over the states (the causal LLM's tokens never see what
  follows them; LI-DiT's refiner, Ma et al. 2024). Output projections start at zero: a fresh refiner is the identity.

Both map `(hidden (B, T, D), mask (B, T))` to the same shapes, train with the UNet's learning rate, and are saved in
the released layout as `text_encoder_connector.safetensors` with their settings in `text_encoder_config.json`.

Measured at tiny scale (README, "What we found"): neither changes a 400-step stage-2 probe (text use 1.022 / 1.019
against 1.024), because the stand-in LM's states do not hold which attribute belongs to which object — a connector
can select or mix states, not supply a binding they lack. They stay as ablations (`experiments/tiny/token_gate.yaml`,
`refiner.yaml`) and for LLMs whose states do carry it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TextConnector(nn.Module):
    """Base class: `(hidden (B, T, D), mask (B, T))` → `(hidden (B, T, D), mask (B, T))`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def settings(self) -> dict:
        """Constructor arguments, recorded next to the exported weights so `from_settings` can rebuild it."""
        raise NotImplementedError

    @staticmethod
    def from_settings(settings: dict) -> "TextConnector":
        kinds = {c.__name__: c for c in (TokenGate, TextRefiner)}
        name = settings.get("class")
        if name not in kinds:
            raise ValueError(f"text_encoder_config.json: unknown connector class {name!r}; known: {sorted(kinds)}")
        return kinds[name](**settings.get("init_args", {}))


class TokenGate(TextConnector):
    """Per-token gate `g = 2·sigmoid(w·LN(h) + b)` (B, T, 1) in (0, 2) multiplying the states.

    Args:
        dim: state width (= the text encoder's `out_dim`).

    w and b start at zero, so g = 1 and a fresh gate leaves a loaded model's outputs unchanged.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.norm = nn.LayerNorm(dim)  # the gate reads normalised states: its scale does not follow the LLM's
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate = 2 * torch.sigmoid(self.score(self.norm(hidden)))  # (B, T, 1)
        return hidden * gate, mask  # (B, T, D), (B, T)

    def settings(self) -> dict:
        return {"class": "TokenGate", "init_args": {"dim": self.dim}}


class RefinerBlock(nn.Module):
    """Pre-norm transformer block with bidirectional self-attention over the unmasked tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"TextRefiner: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        for layer in (self.out, self.mlp[-1]):  # residual branches start at zero: the block starts as the identity
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        keep = mask.bool()[:, None, None, :]  # (B, 1, 1, T): padding is never attended to
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # (B, H, T, D/H)
        x = x + self.out(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D)
        return x + self.mlp(self.norm2(x))  # (B, T, D)


class TextRefiner(TextConnector):
    """`num_layers` bidirectional transformer blocks over the LLM states.

    Args:
        dim: state width (= the text encoder's `out_dim`).
        num_layers, num_heads, mlp_ratio: block settings.
    """

    def __init__(self, dim: int, num_layers: int = 1, num_heads: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__(dim)
        self.num_layers, self.num_heads, self.mlp_ratio = num_layers, num_heads, mlp_ratio
        self.blocks = nn.ModuleList(RefinerBlock(dim, num_heads, mlp_ratio) for _ in range(num_layers))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            hidden = block(hidden, mask)  # (B, T, D)
        return hidden, mask

    def settings(self) -> dict:
        return {"class": "TextRefiner", "init_args": {"dim": self.dim, "num_layers": self.num_layers,
                                                       "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio}}
