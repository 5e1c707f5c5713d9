"""Export a loaded student to TorchScript or ONNX, normalizer and action post-processing built in.

The exported graph maps *raw* observations to *env* actions exactly as
:meth:`polydistill.deploy.DeployedStudent.predict` does (padding, observation normalization,
embodiment token, clipping to the action bounds, cutting padded action dimensions), so a robot
runtime needs neither polydistill nor Python. Each student kind names its inputs and outputs
(:meth:`~polydistill.students.Student.export_module`):

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
from torch import nn

from polydistill.errors import ConfigError, PolydistillError
from polydistill.utils import atomic_write_bytes

__all__ = ["policy_module", "export_student", "example_inputs"]


def policy_module(deployed: Any, embodiment: str | None = None) -> tuple[nn.Module, list[str], list[str]]:
    """The exportable module of a loaded student, with its input and output names.

    Raises:
        ConfigError: if a multi-embodiment student is exported without ``embodiment``.
    """
    module, inputs, outputs = deployed.student.export_module(embodiment)
    # eval mode for good: exporters restore the wrapper's mode afterwards, and a wrapper left in
    # training mode would switch the student's augmentation (random shift) back on
    return module.eval(), inputs, outputs


def example_inputs(deployed: Any, embodiment: str | None = None, batch: int = 2,
                   agents: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of the right shapes and dtypes for the exported module (tracing, tests)."""
    return deployed.student.example_inputs(embodiment, batch, agents, seed)


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
                torch.onnx.export(module, example, buf, input_names=inputs, output_names=outputs,
                                  dynamic_axes=deployed.student.dynamic_axes(inputs, outputs),
                                  dynamo=False, opset_version=17)
    except Exception as exc:  # exporter internals vary by torch version: report, do not crash oddly
        raise PolydistillError(f"{fmt} export failed: {type(exc).__name__}: {exc}") from exc
    finally:
        deployed.student.eval()
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue())
    return out
