"""Shared pytest setup.

- torch on one thread (small MLPs; busy 2-core machines).
- MuJoCo renders offscreen through EGL, which works without a GPU or display.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

torch.set_num_threads(1)
