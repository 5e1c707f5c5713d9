"""The distillation buffer: bounded, per-task balanced, in RAM or memory-mapped on disk."""

from polydistill.buffer.storage import LOGIT_PAD, BufferConfig, DistillationBuffer, FieldSpec

__all__ = ["BufferConfig", "DistillationBuffer", "FieldSpec", "LOGIT_PAD"]
