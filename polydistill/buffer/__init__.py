"""The distillation buffer: bounded, per-task balanced, in RAM or memory-mapped on disk."""

from polydistill.buffer.storage import BufferConfig, DistillationBuffer, FieldSpec

__all__ = ["BufferConfig", "DistillationBuffer", "FieldSpec"]
