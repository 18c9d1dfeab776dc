"""Distillation training of a PyTorch student (an `OnnxModule`) on a teacher's outputs: the loss
(KL with temperature for classifier outputs, MSE for others, optional hard labels), Adam over the
training split, and agreement with the teacher on the held-out split."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from app.passes.distill import DistillConfig

INFERENCE_SAMPLES = 256  # samples per inference call (teacher, evaluation, checks) at most...
INFERENCE_BYTES = 16 * 2**20  # ...and input bytes per call at most: a call's activations grow
# with it, and 256 detector pages at 640 x 640 (1.2 GB of input alone, tens of GB of
# activations) would exhaust the sandbox's memory where one page at a time takes ~100 MB


@dataclass
class Data:
    """The dataset bound to the student's inputs, the labels, and the split."""

    student: list[np.ndarray]  # one array per student input, in its dtype
    raw: dict[str, np.ndarray]  # the arrays as bound to the job's inputs
    labels: np.ndarray | None
    train: np.ndarray
    val: np.ndarray


@dataclass
class Task:
    """What each output is trained on."""

    kinds: list[str]  # per output: "kl", "mse" or "skip" (non-float)
    probabilities: list[bool]  # the teacher's output is probabilities: log taken first
    primary: int  # the output whose agreement and accuracy are reported
    alpha: float
    labels: np.ndarray | None


def _logits(x: Any, probabilities: bool) -> Any:
    x = x.float()
    return torch.log(x.clamp_min(1e-12)) if probabilities else x


def _loss(outputs: tuple[Any, ...], targets: list[Any], labels: Any, task: Task, t: float) -> Any:
    terms = []
    for k, kind in enumerate(task.kinds):
        if kind == "kl":
            student = F.log_softmax(_logits(outputs[k], task.probabilities[k]) / t, -1)
            teacher = F.log_softmax(_logits(targets[k], task.probabilities[k]) / t, -1)
            terms.append(F.kl_div(student, teacher, reduction="batchmean", log_target=True) * t * t)
        elif kind == "mse":
            terms.append(F.mse_loss(outputs[k].float(), targets[k].float()))
    soft = sum(terms) / len(terms)
    if labels is None or task.alpha >= 1:
        return soft
    logits = _logits(outputs[task.primary], task.probabilities[task.primary])
    return task.alpha * soft + (1 - task.alpha) * F.cross_entropy(logits, labels)


def inference_chunk(arrays: list[Any]) -> int:
    """Samples per inference call: `INFERENCE_SAMPLES`, fewer where the samples are large
    (`INFERENCE_BYTES`), at least 1."""
    per_sample = sum(int(a[:1].nbytes) for a in arrays)
    return max(1, min(INFERENCE_SAMPLES, INFERENCE_BYTES // max(per_sample, 1)))


def forward(module: Any, arrays: list[Any], index: Any, device: str) -> tuple[Any, ...]:
    out = module(*[a[index].to(device) for a in arrays])
    return out if isinstance(out, tuple) else (out,)


def train(
    module: Any,
    data: Data,
    teacher: list[np.ndarray],
    task: Task,
    config: DistillConfig,
    device: str,
) -> list[dict[str, Any]]:
    """Adam over the training split; per epoch: mean loss, held-out agreement, wall time."""
    inputs = [torch.from_numpy(a) for a in data.student]
    targets = [torch.from_numpy(t) for t in teacher]
    labels = None if task.labels is None else torch.from_numpy(task.labels)
    train = torch.from_numpy(data.train)
    module.to(device).train()  # no node changes with the mode: see the module docstring
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    for epoch in range(config.epochs):
        started, total = time.perf_counter(), 0.0
        order = train[torch.randperm(len(train), generator=generator)]
        for index in order.split(config.batch_size):
            outputs = forward(module, inputs, index, device)
            batch_targets = [t[index].to(device) for t in targets]
            batch_labels = None if labels is None else labels[index].to(device)
            loss = _loss(outputs, batch_targets, batch_labels, task, config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        wall = time.perf_counter() - started
        history.append(
            {
                "epoch": epoch + 1,
                "loss": round(total / len(train), 6),
                "val_agreement": torch_agreement(module, inputs, teacher, data, task, device),
                "wall_s": round(wall, 4),
            }
        )
    module.eval()
    return history


def torch_agreement(
    module: Any, inputs: list[Any], teacher: list[np.ndarray], data: Data, task: Task, device: str
) -> float:
    chunks = []
    with torch.no_grad():
        for index in torch.from_numpy(data.val).split(inference_chunk(inputs)):
            out = forward(module, inputs, index, device)[task.primary]
            chunks.append(out.float().cpu().numpy())
    return agreement(np.concatenate(chunks), teacher[task.primary][data.val], task)


def agreement(student: np.ndarray, teacher: np.ndarray, task: Task) -> float:
    """Top-1 agreement for a classifier, else the mean per-sample cosine similarity."""
    if task.kinds[task.primary] == "kl":
        return round(float(np.mean(student.argmax(-1) == teacher.argmax(-1))), 6)
    s = student.reshape(len(student), -1).astype(np.float64)
    t = teacher.reshape(len(teacher), -1).astype(np.float64)
    norms = np.linalg.norm(s, axis=1) * np.linalg.norm(t, axis=1)
    cosine = np.where(norms > 0, (s * t).sum(1) / np.maximum(norms, 1e-30), 1.0)
    return round(float(cosine.mean()), 6)
