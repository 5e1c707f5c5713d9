"""Intersection-v0: connected vehicles at an occluded four-way crossing (CAML-style).

A PettingZoo ``ParallelEnv`` in the spirit of CAML's accident-prone connected-vehicle
scenarios. ``n_agents`` vehicles drive straight through a four-way intersection whose corners
are built up, so each vehicle sees cross traffic only late; ``n_background`` reckless cars
(not agents: they keep their distance in lane but never yield at the crossing) pass at random
times. Vehicles that leave (crash or arrive)
leave ``env.agents`` mid-episode. Pure NumPy, no GPU, ~1 ms a step for 4 agents.

Geometry:
    The roads cross at the origin; approach ``k`` (0: eastbound, 1: northbound, 2: westbound,
    3: southbound) drives on the right-hand lane, 1.75 m from the centre line. Buildings fill
    the four corners beyond 6 m from both centre lines and block every line of sight. A
    vehicle's position ``p`` is its signed distance along its path to the centre (negative
    before it). Agent ``i`` starts on approach ``i % 4``, 22-40 m before the centre (15 m
    further back per extra agent on the same approach), at 6-10 m/s.

Action (every agent):
    ``Box(-1, 1, (1,))``: longitudinal acceleration in units of 4 m/s^2; speed stays in
    [0, 12] m/s.

Observation (every agent): ``Dict`` of modalities:
    - ``state`` ``Box((6,), float32)``: ``[p / 40, v / 12, one-hot approach (4)]``: own
      kinematics, cheap and always available.
    - ``camera`` ``Box(0, 255, (1, 16, 16), uint8)``: ego-centric top-down occupancy image,
      40 x 40 m (2.5 m a cell), heading up: buildings 100, vehicles in line of sight 255.
    - ``lidar`` ``Box(0, 1, (32,), float32)``: 32 rays, range / 40 m to the first vehicle or
      building hit; it reaches further than the camera, and is the auxiliary (training-only)
      modality in the CAML recipe.

Reward (per agent and step):
    ``0.01 * v`` (progress; up to 0.12 a step), ``-0.1`` while another vehicle is closer than
    5 m (near miss), ``-10`` on a collision (centres closer than 2.5 m; the agent is
    terminated), ``+2`` on leaving the map beyond 25 m (terminated). Episodes are truncated
    after ``max_steps`` steps (0.1 s each). ``infos[agent]`` has ``collision``,
    ``near_miss`` and ``arrived``.

Experts:
    :meth:`IntersectionEnv.expert_actions` is the scripted privileged expert: it brakes to
    the stop line when a known vehicle with priority (a background car, or an agent that
    reaches the crossing first) would occupy it at the same time, and otherwise drives at
    full speed with a safe gap to the car ahead. ``knowledge`` sets what it knows of:
    ``"shared"`` (what all agents' lidars see, plus every agent: the collaborative view),
    ``"own"`` (what the agent's own lidar sees) or ``"full"`` (every vehicle, an oracle).

Version history:
    v0: first version.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from gymnasium import spaces

from polydistill.envs._base import HomogeneousParallelEnv
from polydistill.errors import ConfigError

__all__ = ["IntersectionEnv"]

DT = 0.1
VMAX = 12.0
ACCEL = 4.0
LANE = 1.75
BUILDING = 6.0
COLLIDE = 2.5
NEAR_MISS = 5.0
SENSE = 40.0
RADIUS = 1.2
BOX = 4.0
EXIT = 25.0
SPAWN_BG = -45.0
CAMERA_HALF = 20.0
HEADINGS = np.array([0.0, 0.5 * np.pi, np.pi, 1.5 * np.pi])
DIRS = np.stack([np.cos(HEADINGS), np.sin(HEADINGS)], axis=1).round(12)
NORMALS = np.stack([-DIRS[:, 1], DIRS[:, 0]], axis=1)


def _blocked(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether the segments ``a[i] -> b[i]`` cross a corner building (``(N, 2)`` each)."""
    d = b - a
    blocked = np.zeros(len(a), dtype=bool)
    for sx in (1.0, -1.0):
        for sy in (1.0, -1.0):
            lo, hi = np.zeros(len(a)), np.ones(len(a))
            for axis, s in ((0, sx), (1, sy)):
                x0, dx = s * a[:, axis], s * d[:, axis]  # want x0 + t dx > BUILDING
                with np.errstate(divide="ignore", invalid="ignore"):
                    t = (BUILDING - x0) / dx
                inc = dx > 0
                dec = dx < 0
                still = dx == 0
                lo = np.where(inc, np.maximum(lo, t), lo)
                hi = np.where(dec, np.minimum(hi, t), hi)
                hi = np.where(still & (x0 <= BUILDING), -1.0, hi)
            blocked |= lo < hi
    return blocked


class IntersectionEnv(HomogeneousParallelEnv):
    """Connected vehicles at an occluded crossing; see the module docstring."""

    metadata = {"name": "intersection_v0", "render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, n_agents: int = 4, n_background: int = 3, max_steps: int = 200,
                 camera_size: int = 16, lidar_rays: int = 32,
                 render_mode: Literal["rgb_array"] | None = None) -> None:
        if n_agents < 1 or n_background < 0 or max_steps < 1 or camera_size < 4 or lidar_rays < 4:
            raise ConfigError(
                "IntersectionEnv: need n_agents >= 1, n_background >= 0, max_steps >= 1, "
                f"camera_size >= 4, lidar_rays >= 4; got {n_agents}, {n_background}, {max_steps}, "
                f"{camera_size}, {lidar_rays}"
            )
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(
                f"IntersectionEnv: render_mode must be None or 'rgb_array', got {render_mode!r}"
            )
        self.n_agents, self.n_background = n_agents, n_background
        self.max_steps, self.camera_size, self.lidar_rays = max_steps, camera_size, lidar_rays
        self.render_mode = render_mode
        self.possible_agents = [f"vehicle_{i}" for i in range(n_agents)]
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._obs_space = spaces.Dict({
            "state": spaces.Box(-np.inf, np.inf, (6,), np.float32),
            "camera": spaces.Box(0, 255, (1, camera_size, camera_size), np.uint8),
            "lidar": spaces.Box(0.0, 1.0, (lidar_rays,), np.float32),
        })
        self._act_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        angles = np.linspace(0, 2 * np.pi, lidar_rays, endpoint=False)
        self._rays = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        self._rng = np.random.default_rng()
        n = n_agents + n_background
        self.approach = np.zeros(n, dtype=np.int64)
        self.p = np.zeros(n)
        self.v = np.zeros(n)
        self.cruise = np.zeros(n)
        self.alive = np.zeros(n, dtype=bool)
        self.spawn_step = np.zeros(n, dtype=np.int64)
        self.steps = 0

    # ------------------------------------------------------------------ dynamics
    def positions(self) -> np.ndarray:
        """World ``(x, y)`` of every vehicle (agents first, then background cars)."""
        k = self.approach
        return self.p[:, None] * DIRS[k] - LANE * NORMALS[k]

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
        """Place the agents before the crossing and schedule the background cars."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        rng, na = self._rng, self.n_agents
        self.approach[:na] = np.arange(na) % 4
        self.p[:na] = -rng.uniform(22.0, 40.0, na) - 15.0 * (np.arange(na) // 4)
        self.v[:na] = rng.uniform(6.0, 10.0, na)
        self.alive[:na] = True
        nb = self.n_background
        self.approach[na:] = rng.integers(0, 4, nb)
        self.p[na:] = SPAWN_BG
        self.v[na:] = self.cruise[na:] = rng.uniform(8.0, 12.0, nb)
        self.alive[na:] = False
        self.spawn_step[na:] = rng.integers(0, 60, nb)
        self.steps = 0
        self._spawn()
        self.agents = list(self.possible_agents)
        return self._observations(), {a: {} for a in self.agents}

    def _drive_background(self) -> None:
        """Background cars keep a gap to the car ahead in their lane, but never yield at the crossing."""
        for j in np.flatnonzero(self.alive[self.n_agents:]) + self.n_agents:
            ahead = np.flatnonzero(self.alive & (self.approach == self.approach[j]) & (self.p > self.p[j]))
            gap = self.p[ahead].min() - self.p[j] if len(ahead) else np.inf
            target = 0.0 if gap < 6.0 + 0.8 * self.v[j] else self.cruise[j]
            self.v[j] = float(np.clip(target, self.v[j] - 2 * ACCEL * DT, self.v[j] + ACCEL * DT))

    def _spawn(self) -> None:
        na = self.n_agents
        for j in np.flatnonzero(self.spawn_step[na:] == self.steps) + na:
            lane = self.alive & (self.approach == self.approach[j])
            if lane.any() and self.p[lane].min() < SPAWN_BG + 20.0:
                self.spawn_step[j] += 1  # the lane entry is taken: enter a step later
            else:
                self.alive[j] = True

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Advance 0.1 s; every live agent must have an action."""
        self._check_actions(actions)
        live = np.array([self._index[a] for a in self.agents], dtype=np.int64)
        acc = np.array([np.asarray(actions[a], dtype=np.float64).reshape(-1)[0] for a in self.agents])
        if not np.all(np.isfinite(acc)):
            raise ConfigError(f"step: non-finite action in {dict(zip(self.agents, acc, strict=True))}")
        self.v[live] = np.clip(self.v[live] + np.clip(acc, -1, 1) * ACCEL * DT, 0.0, VMAX)
        self._drive_background()
        moving = self.alive.copy()
        self.p[moving] += self.v[moving] * DT
        self.steps += 1
        self._spawn()
        # background cars leave at the far edge
        bg = np.arange(self.n_agents, len(self.p))
        self.alive[bg[self.p[bg] > EXIT]] = False

        pos = self.positions()
        idx = np.flatnonzero(self.alive)
        dist = np.linalg.norm(pos[idx, None] - pos[None, idx], axis=-1)
        np.fill_diagonal(dist, np.inf)
        closest = dist.min(axis=1) if len(idx) > 1 else np.full(len(idx), np.inf)
        nearest = dict(zip(idx.tolist(), closest.tolist(), strict=True))
        crashed = {int(i) for i, d in zip(idx, closest, strict=True) if d < COLLIDE}

        rewards, terms, truncs, infos = {}, {}, {}, {}
        for a in self.agents:
            i = self._index[a]
            collision = i in crashed
            arrived = self.p[i] > EXIT and not collision
            near = (not collision) and nearest.get(i, np.inf) < NEAR_MISS
            r = 0.01 * self.v[i] - 0.1 * near - 10.0 * collision + 2.0 * arrived
            rewards[a] = float(r)
            terms[a] = bool(collision or arrived)
            truncs[a] = (not terms[a]) and self.steps >= self.max_steps
            infos[a] = {"collision": bool(collision), "near_miss": bool(near), "arrived": bool(arrived)}
        for i in crashed:  # crashed background cars are towed away too
            self.alive[i] = False
        obs = self._observations()
        for a in self.agents:
            if terms[a] or truncs[a]:
                self.alive[self._index[a]] = False
        self.agents = [a for a in self.agents if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, infos

    # ------------------------------------------------------------------ sensing
    def _visible(self, viewers: np.ndarray) -> np.ndarray:
        """``(len(viewers), n_vehicles)``: alive, within lidar range and in line of sight."""
        pos = self.positions()
        a = np.repeat(pos[viewers], len(pos), axis=0)
        b = np.tile(pos, (len(viewers), 1))
        ok = ~_blocked(a, b) & (np.linalg.norm(a - b, axis=1) < SENSE)
        vis = ok.reshape(len(viewers), len(pos)) & self.alive[None]
        vis[np.arange(len(viewers)), viewers] = False
        return vis

    def _lidar(self, i: int, vis: np.ndarray) -> np.ndarray:
        origin = self.positions()[i]
        rng = np.full(self.lidar_rays, SENSE)
        # buildings: march each ray through the corner quadrants analytically
        for sx in (1.0, -1.0):
            for sy in (1.0, -1.0):
                lo = np.zeros(self.lidar_rays)
                hi = np.full(self.lidar_rays, SENSE)
                for axis, s in ((0, sx), (1, sy)):
                    x0, dx = s * origin[axis], s * self._rays[:, axis]
                    with np.errstate(divide="ignore", invalid="ignore"):
                        t = (BUILDING - x0) / dx
                    lo = np.where(dx > 0, np.maximum(lo, t), lo)
                    hi = np.where(dx < 0, np.minimum(hi, t), hi)
                    hi = np.where((dx == 0) & (x0 <= BUILDING), -1.0, hi)
                rng = np.where(lo < hi, np.minimum(rng, lo), rng)
        others = self.positions()[vis] - origin
        if len(others):
            proj = others @ self._rays.T  # (M, R)
            perp2 = (others ** 2).sum(1)[:, None] - proj ** 2
            hit = (proj > 0) & (perp2 < RADIUS ** 2)
            t = proj - np.sqrt(np.clip(RADIUS ** 2 - perp2, 0, None))
            rng = np.minimum(rng, np.where(hit, t, SENSE).min(axis=0))
        return (np.clip(rng, 0, SENSE) / SENSE).astype(np.float32)

    def _camera(self, i: int, vis: np.ndarray) -> np.ndarray:
        s = self.camera_size
        cell = 2 * CAMERA_HALF / s
        k = self.approach[i]
        fwd, left = DIRS[k], NORMALS[k]
        origin = self.positions()[i]
        # cell centres in the ego frame (heading up: row 0 is ahead), then in the world
        c = (np.arange(s) + 0.5) * cell - CAMERA_HALF
        ahead = -c[:, None] * np.ones((1, s))
        lateral = -c[None, :] * np.ones((s, 1))
        world = origin + ahead[..., None] * fwd + lateral[..., None] * left
        img = np.zeros((s, s), dtype=np.uint8)
        inside = (np.abs(world[..., 0]) > BUILDING) & (np.abs(world[..., 1]) > BUILDING)
        img[inside] = 100
        rel = self.positions()[vis] - origin
        if len(rel):
            row = np.floor((CAMERA_HALF - rel @ fwd) / cell).astype(int)
            col = np.floor((CAMERA_HALF - rel @ left) / cell).astype(int)
            ok = (row >= 0) & (row < s) & (col >= 0) & (col < s)
            img[row[ok], col[ok]] = 255
        return img[None]

    def _observations(self) -> dict[str, dict[str, np.ndarray]]:
        if not self.agents:
            return {}
        ids = np.array([self._index[a] for a in self.agents])
        vis = self._visible(ids)
        out = {}
        for row, a in enumerate(self.agents):
            i = self._index[a]
            state = np.zeros(6, dtype=np.float32)
            state[0], state[1] = self.p[i] / 40.0, self.v[i] / VMAX
            state[2 + self.approach[i]] = 1.0
            out[a] = {"state": state, "camera": self._camera(i, vis[row]), "lidar": self._lidar(i, vis[row])}
        return out

    def agent_pose(self, agent: str) -> np.ndarray:
        """``(x, y, heading)`` of ``agent`` in metres and radians (used by ``SharedView``)."""
        self._check_agent(agent)
        i = self._index[agent]
        x, y = self.positions()[i]
        return np.array([x, y, HEADINGS[self.approach[i]]], dtype=np.float32)

    def state(self) -> np.ndarray:
        """Global state: ``(p / 40, v / 12, alive)`` of every vehicle, agents first."""
        return np.concatenate([self.p / 40.0, self.v / VMAX, self.alive.astype(float)]).astype(np.float32)

    # ------------------------------------------------------------------ experts
    def expert_actions(self, knowledge: Literal["shared", "own", "full"] = "shared") -> dict[str, np.ndarray]:
        """The scripted privileged expert's action for every live agent (module docstring).

        Raises:
            ConfigError: for an unknown ``knowledge``.
        """
        if knowledge not in ("shared", "own", "full"):
            raise ConfigError(f"expert knowledge must be 'shared', 'own' or 'full', got {knowledge!r}")
        if not self.agents:
            return {}
        ids = np.array([self._index[a] for a in self.agents])
        n = len(self.p)
        if knowledge == "full":
            known = np.broadcast_to(self.alive, (len(ids), n))
        else:
            vis = self._visible(ids)
            if knowledge == "shared":
                union = vis.any(axis=0)
                union[ids] = True  # connected agents broadcast their own state
                known = np.broadcast_to(union, (len(ids), n))
            else:
                known = vis
        p_in, p_out = -BOX - RADIUS, BOX + RADIUS
        out = {}
        for row, a in enumerate(self.agents):
            i = self._index[a]
            p, v, k = self.p[i], self.v[i], self.approach[i]
            accel = 1.0
            # keep a safe gap to a known car ahead on the same approach
            same = np.flatnonzero(known[row] & (self.approach == k) & (self.p > p))
            if len(same):
                gap = self.p[same].min() - p
                if gap < 6.0 + 0.8 * v:
                    accel = -1.0
            if p < p_in:
                v_go = max(v, 6.0)
                t_in, t_out = max(0.0, (p_in - p) / v_go), (p_out - p) / v_go
                for j in np.flatnonzero(known[row] & ((self.approach - k) % 2 == 1) & (self.p < p_out)):
                    # agents rank each other with the same formula, so exactly one yields
                    vj = max(self.v[j], 6.0) if j < self.n_agents else max(self.v[j], 1e-3)
                    j_in, j_out = max(0.0, (p_in - self.p[j]) / vj), (p_out - self.p[j]) / vj
                    overlap = j_in < t_out + 1.0 and t_in < j_out + 1.0
                    priority = j >= self.n_agents or j_in < t_in or (j_in == t_in and j < i)
                    if overlap and priority:
                        stop = p_in - 1.0 - p
                        need = v * v / (2 * max(stop, 0.5))
                        accel = min(accel, -min(1.0, need / ACCEL + 0.25))
                        break
            out[a] = np.array([accel], dtype=np.float32)
        return out

    # ------------------------------------------------------------------ rendering
    def render(self) -> np.ndarray | None:
        """Top-down ``(128, 128, 3)`` uint8 view: buildings grey, agents blue, background red."""
        if self.render_mode is None:
            return None
        s, half = 128, 30.0
        c = (np.arange(s) + 0.5) / s * 2 * half - half
        x, y = np.meshgrid(c, -c)
        img = np.full((s, s, 3), 60, dtype=np.uint8)
        img[(np.abs(x) > BUILDING) & (np.abs(y) > BUILDING)] = 150
        pos = self.positions()
        for i in np.flatnonzero(self.alive):
            m = (x - pos[i, 0]) ** 2 + (y - pos[i, 1]) ** 2 < RADIUS ** 2
            img[m] = (40, 110, 255) if i < self.n_agents else (230, 50, 40)
        return img

    def close(self) -> None:
        """Nothing to release."""
