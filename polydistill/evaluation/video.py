"""Save an episode of a student as a GIF.

MuJoCo renders offscreen; without a display set ``MUJOCO_GL=egl`` (the CLI does) or another
headless backend before Python starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polydistill.deploy.checkpoint import DeployedStudent
from polydistill.errors import ConfigError
from polydistill.evaluation.report import EvalTask
from polydistill.utils import make_env

__all__ = ["record_gif"]


def _save_gif(frames: list, path: str | Path, ms_per_frame: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0)
    return path


def record_gif(student: DeployedStudent, task: EvalTask, path: str | Path, seed: int = 0,
               max_frames: int = 300, every: int = 2) -> Path:
    """Roll out one episode of ``student`` on ``task`` and write every ``every``-th frame."""
    try:
        from PIL import Image
    except ImportError as exc:  # pillow comes with matplotlib
        raise ConfigError("saving videos needs pillow: pip install pillow") from exc
    try:
        env = make_env(task.env_id, dict(task.env_kwargs), render_mode="rgb_array", width=240, height=180)
        obs, _ = env.reset(seed=seed)
        env.render()
    except Exception as exc:
        raise ConfigError(
            f"cannot render {task.env_id}: {exc}. On a machine without a display set "
            "MUJOCO_GL=egl (or osmesa with libosmesa6 installed) before starting Python."
        ) from exc
    frames = []
    for i in range(max_frames * every):
        obs, _, term, trunc, _ = env.step(student.predict(np.asarray(obs), embodiment=task.embodiment,
                                                          task=task.task))
        if i % every == 0:
            frames.append(Image.fromarray(env.render()))
        if term or trunc:
            break
    env.close()
    return _save_gif(frames, path, 40)


def record_vision_gif(student: DeployedStudent, path: str | Path, seed: int = 0,
                      max_frames: int = 100) -> Path:
    """One episode of a vision student: the scene (left) beside its camera view (right)."""
    from PIL import Image

    from polydistill.utils import make_env

    meta = student.metadata
    env = make_env(meta["env_id"], meta.get("env_kwargs", {}), render_mode="rgb_array",
                   width=192, height=192)
    obs, _ = env.reset(seed=seed)
    student.reset()  # a recurrent student starts the episode from a fresh state
    keys = meta.get("student_groups", ["proprio", "pixels"])
    frames = []
    for _ in range(max_frames):
        scene = env.render()
        view = {k: obs[k] for k in keys}
        if "pixels" in obs:
            cam = obs["pixels"][-3:].transpose(1, 2, 0)  # newest frame of a stack
            cam = np.asarray(Image.fromarray(cam).resize(scene.shape[1::-1], Image.NEAREST))
            scene = np.concatenate([scene, cam], axis=1)
        frames.append(Image.fromarray(scene))
        obs, _, term, trunc, _ = env.step(student.predict(view))
        if term or trunc:
            break
    env.close()
    return _save_gif(frames, path, 60)
