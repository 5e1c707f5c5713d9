"""Distillation: losses, the distiller, the run core every setup shares, resumable run states."""
