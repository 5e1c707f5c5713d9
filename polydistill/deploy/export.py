"""Export a loaded student to ONNX or TorchScript, normalizer and action clipping built in.

The graph maps *raw* observations to *env* actions exactly as ``predict`` does, so a robot
runtime needs neither polydistill nor Python. Each student kind names its inputs and outputs
(:meth:`~polydistill.students.Student.export_spec`); the batch (and team size) is dynamic.

Example:
    >>> from polydistill import load_student
    >>> load_student("runs/quickstart/student").export("hopper.onnx", embodiment="hopper")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Literal

import torch

from polydistill.errors import ConfigError, PolydistillError
from polydistill.utils import atomic_write_bytes

__all__ = ["export_student"]


def export_student(deployed: Any, path: str | Path, fmt: Literal["onnx", "torchscript"] = "onnx",
                   embodiment: str | None = None, task: str | None = None) -> Path:
    """Write the student as an ONNX model or a TorchScript module (atomically); returns the path.

    Raises:
        ConfigError: for an unknown format or a missing ``embodiment`` (or ``task``, for a
            student with task tokens: one graph per task).
        PolydistillError: if the exporter fails (the message says which and why).
    """
    if fmt not in ("onnx", "torchscript"):
        raise ConfigError(f"export format must be 'onnx' or 'torchscript', got {fmt!r}")
    module, inputs, outputs = deployed.student.export_module(embodiment, task)
    # eval mode for good: exporters restore the wrapper's mode afterwards, and a wrapper left in
    # training mode would switch the student's augmentation (random shift) back on
    module.eval()
    example = deployed.student.example_inputs(embodiment, task=task)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # both exporters announce their own deprecations
            if fmt == "torchscript":
                traced = torch.jit.trace(module, example, check_trace=False)
                torch.jit.save(torch.jit.freeze(traced.eval()), buf)  # weights become constants
            else:
                torch.onnx.export(module, example, buf, input_names=inputs, output_names=outputs,
                                  dynamic_axes=deployed.student.dynamic_axes(embodiment, task),
                                  dynamo=False, opset_version=17)
    except Exception as exc:  # exporter internals vary by torch version: report, do not crash oddly
        raise PolydistillError(f"{fmt} export failed: {type(exc).__name__}: {exc}") from exc
    finally:
        deployed.student.eval()
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue())
    return out
