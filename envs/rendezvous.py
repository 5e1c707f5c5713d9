"""Rendezvous-v0: MuJoCo point-mass robots meeting around a beacon, as a PettingZoo ``ParallelEnv``.

The MuJoCo multi-agent world of polydistill. ``n_agents`` (any number from 1 to 8, so students
can be tested with more or fewer agents than they trained with) sphere robots slide on a
4 x 4 m walled floor, each driven by its own planar force. They must gather around a beacon
(a site, not a body) placed at random each episode, without bumping into each other.

Action (every agent):
    ``Box(-1, 1, (2,))``: planar force (x, y), 2 N per unit.

Observation (every agent): ``Dict`` of modalities, all independent of ``n_agents``:
    - ``proprio`` ``Box((4,), float32)``: own position (m) and velocity (m/s).
    - ``beacon_ring`` ``Box(0, 1, (16,), float32)``: a ring of 16 bearing bins around the robot
      (bin 0 points along +x, counter-clockwise); the bin holding the beacon's bearing reads
      ``exp(-distance)``, the others 0: cheap, deployable, enough to find the beacon.
    - ``neighbor_ring`` ``Box(0, 1, (16,), float32)``: the same ring for other robots,
      ``exp(-distance / 0.3)`` (the closest per bin): short-range collision sensing.
    - ``gps`` ``Box((3,), float32)``: the exact beacon position relative to the robot and 1,
      when the beacon is within 1.5 m; zeros otherwise: the auxiliary (training-only)
      modality in the CAML recipe.

Reward (per agent and step):
    ``0.1 * max(0, 1 - d / 2)`` for distance ``d`` (m) to the beacon (so returns are positive
    and comparable as ratios), ``-1`` while touching another robot (centres closer than
    0.22 m: a collision). Episodes are truncated after ``max_steps`` steps of 0.05 s; no
    agent terminates early. ``infos[agent]`` has ``collision`` and ``distance``.

Expert:
    :meth:`RendezvousEnv.expert_actions` drives each robot (PD) to the point of a 0.3 m ring
    around the beacon nearest to it, pushed away from robots closer than 0.35 m. Its
    ``knowledge`` sets where the beacon is known: ``"full"`` always; ``"shared"`` once any
    robot's ``gps`` has it (robots share their readings); ``"own"`` only from the robot's own
    ``gps``. A robot that does not know the beacon heads for the arena centre, from where
    ``gps`` covers most of the arena.

Version history:
    v0: first version.
"""

from __future__ import annotations

from typing import Any, Literal

import mujoco
import numpy as np
from gymnasium import spaces

from polydistill.envs._base import HomogeneousParallelEnv
from polydistill.errors import ConfigError

__all__ = ["RendezvousEnv"]

ARENA = 2.0
RADIUS = 0.1
TOUCH = 0.22
RING = 16
FORCE = 2.0
FRAME_SKIP = 5
GPS_RANGE = 1.5


def _xml(n: int) -> str:
    colors = ["0.2 0.5 1 1", "1 0.6 0.1 1", "0.3 0.8 0.3 1", "0.8 0.3 0.8 1"]
    robots = "\n".join(
        f'''    <body name="robot{i}" pos="0 0 {RADIUS}">
      <joint name="x{i}" type="slide" axis="1 0 0" damping="1"/>
      <joint name="y{i}" type="slide" axis="0 1 0" damping="1"/>
      <geom type="sphere" size="{RADIUS}" mass="0.5" rgba="{colors[i % 4]}"/>
    </body>''' for i in range(n))
    motors = "\n".join(
        f'    <motor joint="x{i}" gear="{FORCE}" ctrlrange="-1 1" ctrllimited="true"/>\n'
        f'    <motor joint="y{i}" gear="{FORCE}" ctrlrange="-1 1" ctrllimited="true"/>' for i in range(n))
    walls = "\n".join(
        f'    <geom type="box" pos="{x} {y} 0.1" size="{sx} {sy} 0.1" rgba="0.5 0.5 0.5 1"/>'
        for x, y, sx, sy in [(ARENA + 0.05, 0, 0.05, ARENA + 0.1), (-ARENA - 0.05, 0, 0.05, ARENA + 0.1),
                             (0, ARENA + 0.05, ARENA + 0.1, 0.05), (0, -ARENA - 0.05, ARENA + 0.1, 0.05)])
    return f'''<mujoco model="rendezvous">
  <option timestep="0.01" gravity="0 0 -9.81"/>
  <visual><quality shadowsize="0" offsamples="0"/></visual>
  <worldbody>
    <light pos="0 0 5" dir="0 0 -1" castshadow="false"/>
    <camera name="top" pos="0 0 6" xyaxes="1 0 0 0 1 0"/>
    <geom type="plane" size="{ARENA + 0.2} {ARENA + 0.2} 0.1" rgba="0.9 0.9 0.9 1"/>
{walls}
    <site name="beacon" pos="0 0 0.01" size="0.12 0.005" type="cylinder" rgba="1 0.1 0.1 0.6"/>
{robots}
  </worldbody>
  <actuator>
{motors}
  </actuator>
</mujoco>'''


def _ring(rel: np.ndarray, scale: float) -> np.ndarray:
    """Ring reading for relative positions ``(M, 2)``: per bearing bin, the max ``exp(-d/scale)``."""
    out = np.zeros(RING, dtype=np.float32)
    if len(rel):
        d = np.linalg.norm(rel, axis=1)
        angle = np.arctan2(rel[:, 1], rel[:, 0]) % (2 * np.pi)
        bins = np.floor(angle / (2 * np.pi) * RING).astype(int) % RING
        np.maximum.at(out, bins, np.exp(-d / scale).astype(np.float32))
    return out


class RendezvousEnv(HomogeneousParallelEnv):
    """Point-mass robots gathering around a beacon in MuJoCo; see the module docstring."""

    metadata = {"name": "rendezvous_v0", "render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, n_agents: int = 3, max_steps: int = 200,
                 render_mode: Literal["rgb_array"] | None = None) -> None:
        if not 1 <= n_agents <= 8 or max_steps < 1:
            raise ConfigError(f"RendezvousEnv: need 1 <= n_agents <= 8 and max_steps >= 1, got {n_agents}, "
                              f"{max_steps}")
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"RendezvousEnv: render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.n_agents, self.max_steps, self.render_mode = n_agents, max_steps, render_mode
        self.model = mujoco.MjModel.from_xml_string(_xml(n_agents))
        self.data = mujoco.MjData(self.model)
        self.possible_agents = [f"robot_{i}" for i in range(n_agents)]
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._beacon_site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "beacon")
        self._obs_space = spaces.Dict({
            "proprio": spaces.Box(-np.inf, np.inf, (4,), np.float32),
            "beacon_ring": spaces.Box(0.0, 1.0, (RING,), np.float32),
            "neighbor_ring": spaces.Box(0.0, 1.0, (RING,), np.float32),
            "gps": spaces.Box(-np.inf, np.inf, (3,), np.float32),
        })
        self._act_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._rng = np.random.default_rng()
        self._renderer: mujoco.Renderer | None = None
        self.steps = 0

    @property
    def beacon(self) -> np.ndarray:
        """Beacon position ``(x, y)``."""
        return self.model.site_pos[self._beacon_site, :2].copy()

    def positions(self) -> np.ndarray:
        """``(n_agents, 2)`` robot positions."""
        return self.data.qpos.reshape(self.n_agents, 2).copy()

    def velocities(self) -> np.ndarray:
        """``(n_agents, 2)`` robot velocities."""
        return self.data.qvel.reshape(self.n_agents, 2).copy()

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
        """Scatter the robots (at least 0.4 m apart) and place the beacon."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        pos: list[np.ndarray] = []
        while len(pos) < self.n_agents:
            p = self._rng.uniform(-ARENA + 0.3, ARENA - 0.3, 2)
            if all(np.linalg.norm(p - q) > 0.4 for q in pos):
                pos.append(p)
        self.data.qpos[:] = np.concatenate(pos)
        self.model.site_pos[self._beacon_site, :2] = self._rng.uniform(-ARENA + 0.5, ARENA - 0.5, 2)
        mujoco.mj_forward(self.model, self.data)
        self.steps = 0
        self.agents = list(self.possible_agents)
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Apply every robot's force for 0.05 s."""
        self._check_actions(actions)
        ctrl = np.zeros((self.n_agents, 2))
        for a, x in actions.items():
            v = np.asarray(x, dtype=np.float64).reshape(-1)
            if v.shape != (2,) or not np.all(np.isfinite(v)):
                raise ConfigError(f"step: action of {a!r} must be 2 finite numbers, got {x!r}")
            ctrl[self._index[a]] = np.clip(v, -1, 1)
        self.data.ctrl[:] = ctrl.reshape(-1)
        mujoco.mj_step(self.model, self.data, nstep=FRAME_SKIP)
        self.steps += 1
        pos = self.positions()
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        dist = np.linalg.norm(pos - self.beacon, axis=1)
        rewards, terms, truncs, infos = {}, {}, {}, {}
        done = self.steps >= self.max_steps
        for a in self.agents:
            i = self._index[a]
            hit = bool(d[i].min() < TOUCH)
            rewards[a] = float(0.1 * max(0.0, 1.0 - dist[i] / 2.0) - 1.0 * hit)
            terms[a], truncs[a] = False, done
            infos[a] = {"collision": hit, "distance": float(dist[i])}
        obs = self._observations()
        if done:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def _observations(self) -> dict[str, dict[str, np.ndarray]]:
        pos, vel, beacon = self.positions(), self.velocities(), self.beacon
        out = {}
        for a in self.agents:
            i = self._index[a]
            others = np.delete(pos, i, axis=0) - pos[i]
            out[a] = {
                "proprio": np.concatenate([pos[i], vel[i]]).astype(np.float32),
                "beacon_ring": _ring((beacon - pos[i])[None], 1.0),
                "neighbor_ring": _ring(others, 0.3),
                "gps": self._gps(beacon - pos[i]),
            }
        return out

    @staticmethod
    def _gps(rel: np.ndarray) -> np.ndarray:
        if np.linalg.norm(rel) > GPS_RANGE:
            return np.zeros(3, dtype=np.float32)
        return np.array([rel[0], rel[1], 1.0], dtype=np.float32)

    def agent_pose(self, agent: str) -> np.ndarray:
        """``(x, y)`` of ``agent`` (used by ``SharedView``)."""
        self._check_agent(agent)
        return self.positions()[self._index[agent]].astype(np.float32)

    def state(self) -> np.ndarray:
        """Global state: every robot's position and velocity, then the beacon."""
        return np.concatenate([self.data.qpos, self.data.qvel, self.beacon]).astype(np.float32)

    def expert_actions(self, knowledge: Literal["shared", "own", "full"] = "full") -> dict[str, np.ndarray]:
        """The scripted privileged expert's force for every live agent (module docstring).

        Raises:
            ConfigError: for an unknown ``knowledge``.
        """
        if knowledge not in ("shared", "own", "full"):
            raise ConfigError(f"expert knowledge must be 'shared', 'own' or 'full', got {knowledge!r}")
        pos, vel, beacon = self.positions(), self.velocities(), self.beacon
        sensed = np.linalg.norm(pos - beacon, axis=1) <= GPS_RANGE
        out = {}
        for a in self.agents:
            i = self._index[a]
            known = {"full": True, "shared": bool(sensed.any()), "own": bool(sensed[i])}[knowledge]
            rel = pos[i] - beacon
            norm = np.linalg.norm(rel)
            goal = beacon + 0.3 * (rel / norm if norm > 1e-6 else np.array([1.0, 0.0]))
            if not known:
                goal = np.zeros(2)
            force = 4.0 * (goal - pos[i]) - 1.5 * vel[i]
            for j in range(self.n_agents):
                gap = pos[i] - pos[j]
                dist = np.linalg.norm(gap)
                if j != i and dist < 0.35:
                    force += 3.0 * (0.35 - dist) / 0.35 * gap / max(dist, 1e-6)
            out[a] = np.clip(force, -1.0, 1.0).astype(np.float32)
        return out

    def render(self) -> np.ndarray | None:
        """Top-down ``(160, 160, 3)`` uint8 frame (offscreen MuJoCo: set ``MUJOCO_GL=egl`` headless)."""
        if self.render_mode is None:
            return None
        if self._renderer is None:
            try:
                self._renderer = mujoco.Renderer(self.model, 160, 160)
            except Exception as exc:  # no GL context: say what to set
                raise ConfigError(
                    f"RendezvousEnv.render: offscreen MuJoCo rendering failed ({exc}); on a machine "
                    "without a display set MUJOCO_GL=egl (or osmesa with libosmesa6) before importing mujoco"
                ) from None
        self._renderer.update_scene(self.data, camera="top")
        return self._renderer.render()

    def close(self) -> None:
        """Free the renderer."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
