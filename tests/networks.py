"""Small networks shared by the structured-pruning tests (tests/ is on the import path)."""

from __future__ import annotations

import torch


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(100, 32)
        layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(32, 4)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(input_ids)).mean(1))


class Attention(torch.nn.Module):
    """Multi-head self-attention with a separate heads axis, as BERT/GPT code writes it."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.width = heads, dim // heads
        self.q, self.k = torch.nn.Linear(dim, dim), torch.nn.Linear(dim, dim)
        self.v, self.o = torch.nn.Linear(dim, dim), torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (
            f(x).view(b, n, self.heads, self.width).transpose(1, 2)
            for f in (self.q, self.k, self.v)
        )
        scores = torch.softmax(q @ k.transpose(-1, -2) / self.width**0.5, -1)
        return self.o((scores @ v).transpose(1, 2).reshape(b, n, self.heads * self.width))


class Bert(torch.nn.Module):
    """Two attention layers on a residual stream, one behind a layer norm."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(100, 32)
        self.one, self.two = Attention(), Attention()
        self.norm = torch.nn.LayerNorm(32)
        self.head = torch.nn.Linear(32, 3)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        x = self.norm(x + self.one(x))
        return self.head((x + self.two(x)).mean(1))
