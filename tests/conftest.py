"""Shared pytest setup: keep torch on one thread (small MLPs; busy 2-core machines)."""

import torch

torch.set_num_threads(1)
