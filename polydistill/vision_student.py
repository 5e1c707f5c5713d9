"""The vision student: a CNN on camera pixels fused with proprioception (torch + NumPy only).

Kept apart from :mod:`polydistill.vision` (which runs envs) so deployed vision students load
without gymnasium.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from polydistill.embodiment import Embodiment, EmbodimentTable
from polydistill.errors import ConfigError
from polydistill.student import GeneralistStudent, StudentConfig

__all__ = ["VisionConfig", "VisionStudent", "random_shift"]


@dataclass(frozen=True)
class VisionConfig:
    """Image encoder of the vision student."""

    channels: tuple[int, ...] = (32, 32, 32)
    """Output channels of the conv layers (kernels and strides follow ``encoder``; layers past
    the third are 3x3 stride 1)."""
    feature_dim: int = 128
    """Width of the image embedding fused with proprioception."""
    shift_pad: int = 4
    """Random-shift augmentation (DrQ): max shift in pixels during training (0 disables)."""
    encoder: Literal["nature", "spatial_softmax"] = "spatial_softmax"
    """``spatial_softmax`` (default): 3x3 convs of
    strides 2, 2, 1, then each channel's softmax-weighted image coordinates (x, y), the
    keypoint encoder of Levine et al. (2016), which keeps object positions precise.
    ``nature``: the NatureCNN stack (8/4, 4/2, 3/1) flattened into a linear layer. Measured on
    PointGoalVision at 64x64 with 40k steps: spatial_softmax 88.6 vs teacher 90.9 (0.975);
    nature 5.0 (the stride-4 first layer loses the small goal)."""

    def __post_init__(self) -> None:
        if not self.channels or min(self.channels) < 1 or self.feature_dim < 1 or self.shift_pad < 0:
            raise ConfigError(f"invalid VisionConfig {self}")
        if self.encoder not in ("nature", "spatial_softmax"):
            raise ConfigError(
                f"VisionConfig.encoder: unknown {self.encoder!r}; valid: nature, spatial_softmax"
            )


class SpatialSoftmax(nn.Module):
    """(B, C, H, W) feature maps -> (B, 2C) expected image coordinates in [-1, 1]."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width),
                                indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1))  # (HW, 2)
        self.temperature = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Expected (x, y) per channel."""
        b, c, h, w = x.shape
        attn = torch.softmax(x.reshape(b, c, h * w) / self.temperature, dim=-1)
        return (attn @ self.grid).reshape(b, 2 * c)


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image of ``x`` (B, C, H, W) by up to ``pad`` pixels (replicate-padded), DrQ-style."""
    if pad == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    eps = 1.0 / (h + 2 * pad)
    ar = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad, dtype=x.dtype)[:h]
    ar = ar.unsqueeze(0).repeat(h, 1).unsqueeze(2)
    base = torch.cat([ar, ar.transpose(1, 0)], dim=2).unsqueeze(0).repeat(b, 1, 1, 1)
    shift = torch.randint(0, 2 * pad + 1, (b, 1, 1, 2), generator=generator).to(x.dtype)
    shift *= 2.0 / (h + 2 * pad)
    return F.grid_sample(padded, base + shift, padding_mode="zeros", align_corners=False)


class VisionStudent(GeneralistStudent):
    """CNN on pixels + normalized proprioception, fused by the generalist trunk and head.

    ``pixels=False`` builds the *blind* control: the same network without the image path.
    """

    def __init__(self, proprio_dim: int, action_low: np.ndarray, action_high: np.ndarray,
                 pixel_shape: tuple[int, int, int] | None, config: StudentConfig | None = None,
                 vision: VisionConfig | None = None) -> None:
        table = EmbodimentTable([Embodiment("vision", proprio_dim, "continuous", len(action_low),
                                            tuple(map(float, action_low)),
                                            tuple(map(float, action_high)))])
        self.vision = vision or VisionConfig()
        self.pixel_shape = pixel_shape
        feat = self.vision.feature_dim if pixel_shape is not None else 0
        super().__init__(table, config, extra_features=feat)
        self.obs_keys = ("proprio", "pixels") if pixel_shape is not None else ("proprio",)
        if pixel_shape is not None:
            c, h, w = pixel_shape
            layers: list[nn.Module] = []
            # NatureCNN kernels for >= 36 px images, a gentler stack for small ones
            first = [(8, 4), (4, 2), (3, 1)] if min(h, w) >= 36 else [(4, 2), (3, 2), (3, 1)]
            if self.vision.encoder == "spatial_softmax":
                first = [(3, 2), (3, 2), (3, 1)]
            specs = first + [(3, 1)] * max(0, len(self.vision.channels) - 3)
            for out_c, (k, s) in zip(self.vision.channels, specs, strict=False):
                layers += [nn.Conv2d(c, out_c, k, s), nn.ReLU()]
                c = out_c
            if self.vision.encoder == "spatial_softmax":
                layers = layers[:-1]  # keypoint logits: no ReLU before the softmax
                with torch.no_grad():
                    fh, fw = nn.Sequential(*layers)(torch.zeros(1, *pixel_shape)).shape[2:]
                self.conv = nn.Sequential(*layers, SpatialSoftmax(fh, fw))
            else:
                self.conv = nn.Sequential(*layers, nn.Flatten())
            try:
                with torch.no_grad():
                    n_flat = self.conv(torch.zeros(1, *pixel_shape)).shape[1]
            except RuntimeError as exc:
                raise ConfigError(
                    f"images of shape {pixel_shape} are too small for {len(self.vision.channels)} "
                    f"conv layers: {exc}"
                ) from None
            self.project = nn.Sequential(nn.Linear(n_flat, self.vision.feature_dim),
                                         nn.LayerNorm(self.vision.feature_dim), nn.Tanh())

    def batch_obs(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """``proprio`` (and ``pixels``) tensors of a buffer batch."""
        return {k: torch.from_numpy(np.ascontiguousarray(batch[k])) for k in self.obs_keys}

    def features(self, obs: dict[str, torch.Tensor], emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Fuse normalized proprioception, the embodiment token and the image embedding."""
        proprio = obs["proprio"].to(torch.float32)
        parts = [self.normalize(proprio, emb),
                 nn.functional.one_hot(emb, len(self.table)).to(torch.float32)]
        if self.pixel_shape is not None:
            pix = obs["pixels"].to(torch.float32) / 255.0
            if self.training:
                pix = random_shift(pix, self.vision.shift_pad)
            parts.append(self.project(self.conv(pix)))
        return self.trunk(torch.cat(parts, dim=-1))
