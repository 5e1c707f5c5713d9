"""Export a loaded student to TorchScript or ONNX, normalizer and action post-processing built in.

The exported graph maps *raw* observations to *env* actions exactly as
:meth:`polydistill.checkpoint.DeployedStudent.predict` does (padding, observation
normalization, embodiment token, clipping to the action bounds, cutting padded action
dimensions), so a robot runtime needs neither polydistill nor Python. Inputs and outputs:

- generalist, one embodiment: ``obs`` float32 ``(B, obs_dim)`` -> ``action`` ``(B, act_dim)``;
- vision: ``proprio`` float32 ``(B, P)`` and ``pixels`` uint8 ``(B, C, H, W)`` -> ``action``;
- vision, recurrent: the same plus ``state`` ``(B, S)`` and ``first`` bool ``(B,)`` (episode
  starts) -> ``action`` and ``next_state``;
- team (multi-agent): ``obs`` float32 ``(B, N, D)`` (the deployable modalities flattened in
  order) and ``present`` bool ``(B, N)`` -> ``action`` ``(B, N, A)`` (zeros for absent agents).

Discrete embodiments output int64 action ids ``(B,)``. The batch (and team size) is dynamic.

Example:
    >>> from polydistill import load_student
    >>> policy = load_student("runs/quickstart/student")  # doctest: +SKIP
    >>> policy.export("hopper.onnx", embodiment="hopper")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from polydistill.errors import ConfigError, PolydistillError
from polydistill.student import GeneralistStudent
from polydistill.utils import atomic_write_bytes

__all__ = ["policy_module", "export_student", "example_inputs"]


class _Generalist(nn.Module):
    def __init__(self, student: GeneralistStudent, emb_id: int) -> None:
        super().__init__()
        self.student = student
        e = student.table.embodiments[emb_id]
        self.emb_id, self.pad = emb_id, student.table.max_obs_dim - e.obs_dim
        self.n = e.action_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = F.pad(obs.to(torch.float32), (0, self.pad))
        emb = torch.zeros_like(x[:, 0], dtype=torch.long) + self.emb_id
        out = self.student(x, emb)
        if self.student.discrete:
            return out.logits[:, : self.n].argmax(-1)
        return self.student.clip_action(out.mean, emb)[:, : self.n]


class _Vision(nn.Module):
    def __init__(self, student: Any) -> None:
        super().__init__()
        self.student = student

    def forward(self, proprio: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        emb = torch.zeros_like(proprio[:, 0], dtype=torch.long)
        obs = {"proprio": proprio, "pixels": pixels} if self.student.pixel_shape else {"proprio": proprio}
        return self.student.clip_action(self.student(obs, emb).mean, emb)


class _VisionBlind(_Vision):
    def forward(self, proprio: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        emb = torch.zeros_like(proprio[:, 0], dtype=torch.long)
        return self.student.clip_action(self.student({"proprio": proprio}, emb).mean, emb)


class _Recurrent(nn.Module):
    def __init__(self, student: Any) -> None:
        super().__init__()
        self.student = student

    def forward(self, proprio: torch.Tensor, pixels: torch.Tensor, state: torch.Tensor,
                first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = torch.zeros_like(proprio[:, 0], dtype=torch.long)
        return self.student.step({"proprio": proprio, "pixels": pixels}, emb, state, first)


class _Team(nn.Module):
    def __init__(self, student: Any) -> None:
        super().__init__()
        self.student = student
        self.n = student.table.embodiments[0].action_dim

    def forward(self, obs: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        emb = torch.zeros_like(obs[:, :, 0], dtype=torch.long)
        out = self.student({"obs": obs, "present": present}, emb)
        action = self.student.clip_action(out.mean, emb)[..., : self.n]
        return action * present.unsqueeze(-1).to(action.dtype)  # absent agents: zeros


def policy_module(deployed: Any, embodiment: str | None = None) -> tuple[nn.Module, list[str], list[str]]:
    """The exportable module of a loaded student, with its input and output names.

    Raises:
        ConfigError: if a multi-embodiment student is exported without ``embodiment``.
    """
    student = deployed.student
    kind = deployed.metadata.get("student")
    module: nn.Module
    if kind == "team":
        module, inputs, outputs = _Team(student), ["obs", "present"], ["action"]
    elif kind == "vision" and getattr(student, "recurrent", False):
        module = _Recurrent(student)
        inputs, outputs = ["proprio", "pixels", "state", "first"], ["action", "next_state"]
    elif kind == "vision":
        module = _Vision(student) if student.pixel_shape else _VisionBlind(student)
        inputs, outputs = (["proprio", "pixels"] if student.pixel_shape else ["proprio"]), ["action"]
    else:
        if embodiment is None and len(student.table) > 1:
            raise ConfigError(
                f"this student drives several embodiments {student.table.names}; export one: embodiment=NAME"
            )
        emb_id = 0 if embodiment is None else student.table.id(embodiment)
        module, inputs, outputs = _Generalist(student, emb_id), ["obs"], ["action"]
    # eval mode for good: exporters restore the wrapper's mode afterwards, and a wrapper left in
    # training mode would switch the student's augmentation (random shift) back on
    return module.eval(), inputs, outputs


def example_inputs(deployed: Any, embodiment: str | None = None, batch: int = 2,
                   agents: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of the right shapes and dtypes for the exported module (tracing, tests)."""
    g = torch.Generator().manual_seed(seed)
    student = deployed.student
    kind = deployed.metadata.get("student")
    if kind == "team":
        d = student.table.max_obs_dim
        return torch.randn(batch, agents, d, generator=g), torch.ones(batch, agents, dtype=torch.bool)
    if kind == "vision":
        p = student.table.embodiments[0].obs_dim
        proprio = torch.randn(batch, p, generator=g)
        if not student.pixel_shape:
            return (proprio,)
        pixels = torch.randint(0, 256, (batch, *student.pixel_shape), generator=g, dtype=torch.uint8)
        if getattr(student, "recurrent", False):
            state = torch.randn(batch, student.feature_dim, generator=g)
            return proprio, pixels, state, torch.zeros(batch, dtype=torch.bool)
        return proprio, pixels
    e = student.table.embodiments[0 if embodiment is None else student.table.id(embodiment)]
    return (torch.randn(batch, e.obs_dim, generator=g),)


def export_student(deployed: Any, path: str | Path, fmt: Literal["onnx", "torchscript"] = "onnx",
                   embodiment: str | None = None) -> Path:
    """Write the student as an ONNX model or a TorchScript module (atomically); returns the path.

    Raises:
        ConfigError: for an unknown format or a missing ``embodiment``.
        PolydistillError: if the exporter fails (the message says which and why).
    """
    if fmt not in ("onnx", "torchscript"):
        raise ConfigError(f"export format must be 'onnx' or 'torchscript', got {fmt!r}")
    module, inputs, outputs = policy_module(deployed, embodiment)
    example = example_inputs(deployed, embodiment)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # both exporters announce their own deprecations
            if fmt == "torchscript":
                traced = torch.jit.trace(module, example, check_trace=False)
                torch.jit.save(torch.jit.freeze(traced.eval()), buf)  # weights become constants
            else:
                dynamic = {name: {0: "batch"} for name in inputs + outputs}
                if deployed.metadata.get("student") == "team":
                    for name in ("obs", "present", "action"):
                        dynamic[name] = {0: "batch", 1: "agents"}
                torch.onnx.export(module, example, buf, input_names=inputs, output_names=outputs,
                                  dynamic_axes=dynamic, dynamo=False, opset_version=17)
    except Exception as exc:  # exporter internals vary by torch version: report, do not crash oddly
        raise PolydistillError(f"{fmt} export failed: {type(exc).__name__}: {exc}") from exc
    finally:
        deployed.student.eval()
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue())
    return out
