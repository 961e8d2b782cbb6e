"""``gpt``: a small causal transformer language model (decoder-only, pre-norm).

Tokens ``[B, T]`` (int64 in ``[0, vocab_size)``) -> next-token logits ``[B, T, vocab_size]``:

    h_0 = E[x_t] + P[t]                                   (token and learned position embeddings)
    h'  = h + MHA(LN(h), causal mask)                     per block
    h   = h' + W_2 GELU(W_1 LN(h'))
    logits = LN(h) E^T                                    (output layer tied to the token embedding)

as in GPT-2 (Radford et al. 2019), with the layers of ``torch.nn`` only (``nn.Embedding``,
``nn.LayerNorm``, ``nn.MultiheadAttention``, ``nn.Linear``), no dropout and no batch
statistics, so a sample's output depends on that sample alone and ``training.grand`` can
give each layer type its ghost-norm rule. The output layer (``head``, an ``nn.Linear``) shares
its weight with the token embedding: one parameter used twice (Press & Wolf 2017), which
GraNd handles exactly (``training.grand.ties``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class GPTConfig:
    """The architecture; the defaults are ``pydoc-lm``'s (README, "A language model")."""

    vocab_size: int = 256
    sequence_length: int = 128
    d_model: int = 128
    num_heads: int = 4
    num_layers: int = 2
    mlp_ratio: int = 4

    def validate(self) -> None:
        for name in ("vocab_size", "sequence_length", "d_model", "num_heads", "num_layers", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of num_heads ({self.num_heads})")


class Block(nn.Module):
    """One pre-norm transformer block: causal self-attention, then an MLP, each residual."""

    def __init__(self, d_model: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, d_model)
        )

    def forward(self, h: Tensor, causal_mask: Tensor) -> Tensor:
        a = self.attention_norm(h)
        attended, _ = self.attention(a, a, a, attn_mask=causal_mask, need_weights=False, is_causal=True)
        h = h + attended
        return h + self.mlp(self.mlp_norm(h))


class GPT(nn.Module):
    """The model of the module docstring; ``forward(tokens [B, T]) -> logits [B, T, V]``."""

    def __init__(self, config: GPTConfig = GPTConfig()) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.sequence_length, config.d_model)
        self.blocks = nn.ModuleList(
            Block(config.d_model, config.num_heads, config.mlp_ratio) for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(config.d_model)
        # GPT-2's initialisation: N(0, 0.02) for embeddings and linear weights, zero biases.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.head.weight = self.token_embedding.weight  # tied: the same Parameter
        # True above the diagonal: position t attends to positions <= t only.
        mask = torch.triu(torch.ones(config.sequence_length, config.sequence_length, dtype=torch.bool), 1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        if length > self.config.sequence_length:
            raise ValueError(
                f"GPT: sequences of {length} tokens; this model has positions for at most "
                f"{self.config.sequence_length} (GPTConfig.sequence_length)"
            )
        # [B, T] like the tokens, so the position embedding sees one row per sample.
        positions = torch.arange(length, device=tokens.device).expand(tokens.shape[0], length)
        h = self.token_embedding(tokens) + self.position_embedding(positions)
        mask = self.causal_mask[:length, :length]
        for block in self.blocks:
            h = block(h, mask)
        return self.head(self.final_norm(h))
