"""Wrappers that override one thing each.

- :mod:`polydistill.wrappers.gymnasium`: Gymnasium ``ObservationWrapper`` s that split an env's
  observation into named groups (``proprio``, ``privileged``, ``pixels``) and the
  :class:`~polydistill.wrappers.gymnasium.ObsGroups` routing between teacher and student;
- :mod:`polydistill.wrappers.pettingzoo`: PettingZoo ``ParallelEnv`` wrappers for modalities
  (named groups, the shared training view, deployable selection, dropout, padding);
- :mod:`polydistill.wrappers.sb3`: PettingZoo copies as one stable-baselines3 ``VecEnv``.
"""
