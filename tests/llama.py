"""A tiny `transformers` Llama (decoder-only, seeded weights) exported to ONNX the way a
user exports a real one: `input_ids` + `attention_mask` in, `logits` out, batch and sequence
dynamic, no KV cache.

The weights are seeded, then trained for a few seconds on a synthetic bigram language (each
token has one likely successor), because a purely random Llama has no next token to keep: its
last-position logits differ by noise (median top-1 margin 0.3 at init scale 0.15), and int4 kept
the argmax of only 48% of 64 prompts while int8 kept 86%. Trained, the margin is about 3.4, as a
real LM's is on a confident continuation, and agreement measures quantization, not coin tosses.

Why a real `transformers` graph and not a hand-built decoder (networks.onnx_decoder): the
exported Llama carries what real LLM files carry and hand-built graphs lack (rotary embeddings,
RMSNorm, grouped-query attention, the causal + padding mask arithmetic, a tied LM head that the
exporter duplicates as a transposed MatMul weight), so a pass that breaks on real decoders breaks
here first. Importable by worker-side tests only: it imports torch and transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

VOCAB = 512
HIDDEN = 64
INTERMEDIATE = 128
LAYERS = 2
HEADS, KV_HEADS = 4, 2
OPSET = 17  # the TorchScript exporter's usual opset for LLMs (docs: field notes)
TRAIN_STEPS, TRAIN_BATCH, TRAIN_SEQUENCE = 150, 32, 24
FOLLOW = 0.8  # how often the bigram language's likely successor comes next


def tiny_llama(seed: int = 0) -> torch.nn.Module:
    """A 2-layer LlamaForCausalLM with SmolLM's shape choices (GQA, tied embeddings), seeded
    and briefly trained (see the module's docstring)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    return train_briefly(LlamaForCausalLM(config), seed).eval()


def bigram_batch(successor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Token sequences where each token is followed by its successor with probability FOLLOW."""
    n, length = TRAIN_BATCH, TRAIN_SEQUENCE
    ids = torch.empty(n, length, dtype=torch.long)
    ids[:, 0] = torch.randint(3, VOCAB, (n,), generator=generator)
    for i in range(1, length):
        noise = torch.randint(3, VOCAB, (n,), generator=generator)
        follow = torch.rand(n, generator=generator) < FOLLOW
        ids[:, i] = torch.where(follow, successor[ids[:, i - 1]], noise)
    return ids


def train_briefly(lm: torch.nn.Module, seed: int) -> torch.nn.Module:
    """TRAIN_STEPS of AdamW on the bigram language (about 4 s on one thread), seeded."""
    generator = torch.Generator().manual_seed(seed)
    successor = torch.randint(3, VOCAB, (VOCAB,), generator=generator)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same floating-point sums on every run
    try:
        lm.train()
        for _ in range(TRAIN_STEPS):
            ids = bigram_batch(successor, generator)
            loss = lm(input_ids=ids, labels=ids).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return lm


class Logits(torch.nn.Module):
    """The causal LM as `(input_ids, attention_mask) -> logits`, without the KV cache."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def export_llama(lm: torch.nn.Module, path: Path) -> Path:
    """Export with the TorchScript exporter (seconds, where dynamo takes far longer on a
    transformers model) at OPSET, batch and sequence dynamic."""
    axes = {name: {0: "batch", 1: "sequence"} for name in ("input_ids", "attention_mask")}
    example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    torch.onnx.export(
        Logits(lm).eval(),
        example,
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={**axes, "logits": {0: "batch", 1: "sequence"}},
    )
    return path


def prompts(batch: int = 16, sequence: int = 24, seed: int = 1) -> dict[str, np.ndarray]:
    """Right-padded token batches of varied lengths (a real tokenizer's padding), so the last
    non-padding position differs per row and padding is really masked."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(sequence // 3, sequence + 1, batch)
    ids = rng.integers(3, VOCAB, (batch, sequence)).astype(np.int64)
    mask = (np.arange(sequence)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": np.where(mask == 1, ids, 2), "attention_mask": mask}


def last_positions(mask: np.ndarray) -> np.ndarray:
    """Each row's last non-padding position (right padding)."""
    return mask.sum(1) - 1


def next_tokens(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The argmax of the logits at each row's last non-padding position: the next token."""
    return logits[np.arange(len(logits)), last_positions(mask)].argmax(-1)


def torch_logits(lm: torch.nn.Module, feeds: dict[str, np.ndarray]) -> Any:
    """PyTorch's logits on the feeds (the export's reference)."""
    tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.no_grad():
        return Logits(lm)(tensors["input_ids"], tensors["attention_mask"]).numpy()
