"""Model configuration shared by the CIFG-LSTM and the Transformer."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    kind: Literal["cifg", "transformer"] = "cifg"  # Gboard's CIFG-LSTM, or a small causal Transformer
    vocab_size: int = 2048  # SentencePiece pieces; set from the trained tokenizer
    embed_dim: int = 64  # tied input/output embedding width (Gboard: 96); the softmax dominates CPU time
    hidden_dim: int = 256  # LSTM units (Gboard: 670) or Transformer MLP width
    num_layers: int = 2  # Transformer blocks (the CIFG-LSTM has one layer, as in Gboard)
    num_heads: int = 4  # Transformer attention heads; must divide embed_dim
    context: int = 32  # Transformer: pieces of left context it attends to

    def __post_init__(self):
        if self.kind not in ("cifg", "transformer"):
            raise ValueError(f"model kind must be 'cifg' or 'transformer', got {self.kind!r}")
        for name in ("vocab_size", "embed_dim", "hidden_dim", "num_layers", "num_heads", "context"):
            if getattr(self, name) < 1:
                raise ValueError(f"model {name} must be ≥ 1, got {getattr(self, name)}")
        if self.kind == "transformer" and self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")
