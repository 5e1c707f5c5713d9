"""The generalist student and its embodiment table: padding, masking, bounds, normalization."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from polydistill.errors import ConfigError, ObservationError, PolydistillError
from polydistill.students import GeneralistStudent, StudentConfig
from polydistill.students.embodiment import Embodiment, EmbodimentTable

SMALL = StudentConfig(hidden=(32, 32))


def _continuous_table() -> EmbodimentTable:
    return EmbodimentTable([
        Embodiment("hopper", 11, "continuous", 3, (-1.0,) * 3, (1.0,) * 3),
        Embodiment("swimmer", 8, "continuous", 2, (-0.5, -2.0), (0.5, 3.0)),
        Embodiment("pendulum", 4, "continuous", 1, (-10.0,), (10.0,)),
    ])


def _discrete_table() -> EmbodimentTable:
    return EmbodimentTable([
        Embodiment("grid", 6, "discrete", 5),
        Embodiment("cart", 4, "discrete", 2),
        Embodiment("lander", 8, "discrete", 4),
    ])


def _batch(table: EmbodimentTable, n_per: int = 10, seed: int = 0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    obs, emb = [], []
    for i, e in enumerate(table.embodiments):
        raw = rng.normal(size=(n_per, e.obs_dim)).astype(np.float32) * scale
        obs.append(table.pad_obs(raw, i))
        emb.append(np.full(n_per, i))
    return torch.as_tensor(np.concatenate(obs)), torch.as_tensor(np.concatenate(emb))


def _blow_up_head(student: GeneralistStudent, factor: float = 300.0) -> None:
    """Make the (tiny-initialised) head produce large outputs so clipping matters."""
    with torch.no_grad():
        student.head.weight.mul_(factor)
        student.head.bias.normal_(0.0, 5.0)


# --------------------------------------------------------------------------- table
def test_table_padding_arithmetic():
    table = _continuous_table()
    assert len(table) == 3
    assert table.names == ["hopper", "swimmer", "pendulum"]
    assert table.max_obs_dim == 11 and table.max_action_dim == 3
    np.testing.assert_array_equal(table.action_mask, [[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(table.action_scale, [[1, 1, 1], [0.5, 2.5, 1], [10, 1, 1]])
    assert table.id("swimmer") == 1
    assert table["pendulum"].action_dim == 1
    padded = table.pad_obs(np.ones((2, 8)), 1)
    assert padded.shape == (2, 11) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[:, 8:], 0)
    a = table.unpad_action(np.array([[5.0, -5.0, 7.0]]), 1)
    np.testing.assert_array_equal(a, [[0.5, -2.0]])


@pytest.mark.parametrize(("width", "emb_id"), [(11, 2), (8, 0), (12, 0), (3, 1)])
def test_pad_obs_rejects_wrong_width(width, emb_id):
    table = _continuous_table()
    with pytest.raises(ObservationError):
        table.pad_obs(np.ones((2, width), np.float32), emb_id)


def test_table_json_round_trip():
    for table in (_continuous_table(), _discrete_table()):
        again = EmbodimentTable.from_json(table.to_json())
        assert again.embodiments == table.embodiments
        np.testing.assert_array_equal(again.action_mask, table.action_mask)


def test_table_rejects_mixed_action_kinds():
    with pytest.raises(ConfigError, match="continuous") as info:
        EmbodimentTable([
            Embodiment("hopper", 11, "continuous", 3, (-1.0,) * 3, (1.0,) * 3),
            Embodiment("cart", 4, "discrete", 2),
        ])
    assert "cart" in str(info.value) and "hopper" in str(info.value)


def test_table_rejects_duplicate_names():
    e = Embodiment("hopper", 11, "continuous", 3, (-1.0,) * 3, (1.0,) * 3)
    with pytest.raises(ConfigError, match="unique"):
        EmbodimentTable([e, Embodiment("hopper", 5, "continuous", 1, (-1.0,), (1.0,))])


def test_table_rejects_empty():
    with pytest.raises(ConfigError):
        EmbodimentTable([])


def test_unknown_embodiment_lists_known_names():
    table = _continuous_table()
    with pytest.raises(ObservationError) as info:
        table.id("cheetah")
    msg = str(info.value)
    assert "cheetah" in msg
    for name in table.names:
        assert name in msg
    with pytest.raises(PolydistillError):
        table["cheetah"]


@pytest.mark.parametrize("kwargs", [
    {"name": "x", "obs_dim": 0, "action_kind": "discrete", "action_dim": 2},
    {"name": "x", "obs_dim": 3, "action_kind": "discrete", "action_dim": 0},
    {"name": "x", "obs_dim": 3, "action_kind": "continuous", "action_dim": 2},
    {"name": "x", "obs_dim": 3, "action_kind": "continuous", "action_dim": 2,
     "action_low": (-1.0,), "action_high": (1.0, 1.0)},
])
def test_embodiment_rejects_bad_dims(kwargs):
    with pytest.raises(ConfigError):
        Embodiment(**kwargs)


def test_embodiment_from_spaces():
    box = gym.spaces.Box(-1.0, 1.0, shape=(7,))
    cont = Embodiment.from_spaces("b", box, gym.spaces.Box(-2.0, 2.0, shape=(3,)))
    assert (cont.obs_dim, cont.action_kind, cont.action_dim) == (7, "continuous", 3)
    assert cont.action_low == (-2.0,) * 3 and cont.action_high == (2.0,) * 3
    disc = Embodiment.from_spaces("d", box, gym.spaces.Discrete(4))
    assert (disc.action_kind, disc.action_dim) == ("discrete", 4)
    with pytest.raises(ConfigError):
        Embodiment.from_spaces("img", gym.spaces.Box(0, 1, shape=(4, 4)), gym.spaces.Discrete(2))
    with pytest.raises(ConfigError):
        Embodiment.from_spaces("tup", box, gym.spaces.Tuple([gym.spaces.Discrete(2)]))


@pytest.mark.parametrize("space", [gym.spaces.MultiDiscrete([2, 3]), gym.spaces.MultiBinary(3)])
def test_embodiment_from_spaces_rejects_multi_spaces(space):
    box = gym.spaces.Box(-1.0, 1.0, shape=(7,))
    with pytest.raises(ConfigError):
        Embodiment.from_spaces("multi", box, space)


def test_embodiment_from_spaces_rejects_offset_discrete():
    box = gym.spaces.Box(-1.0, 1.0, shape=(7,))
    with pytest.raises(ConfigError):
        Embodiment.from_spaces("offset", box, gym.spaces.Discrete(3, start=1))


# --------------------------------------------------------------------------- continuous student
def test_output_shapes_and_masked_outputs():
    torch.manual_seed(0)
    table = _continuous_table()
    student = GeneralistStudent(table, SMALL)
    _blow_up_head(student)
    obs, emb = _batch(table)
    out = student(obs, emb)
    assert out.logits is None
    assert out.mean.shape == (30, 3) and out.log_std.shape == (30, 3)
    mask = torch.as_tensor(table.action_mask)[emb]
    assert torch.all(out.mean[~mask] == 0) and torch.all(out.log_std[~mask] == 0)
    ls = out.log_std[mask]
    assert torch.all(ls >= SMALL.log_std_min) and torch.all(ls <= SMALL.log_std_max)
    assert student.features(obs, emb).shape == (30, 32)


@pytest.mark.parametrize("deterministic", [True, False])
def test_act_padded_dims_zero_and_within_bounds(deterministic):
    torch.manual_seed(0)
    table = _continuous_table()
    student = GeneralistStudent(table, SMALL)
    _blow_up_head(student)
    obs, emb = _batch(table, n_per=50, scale=5.0)
    gen = torch.Generator().manual_seed(0)
    a = student.act(obs, emb, deterministic=deterministic, generator=gen)
    assert a.shape == (150, 3)
    mask = torch.as_tensor(table.action_mask)[emb]
    assert torch.all(a[~mask] == 0.0)
    low = torch.as_tensor(table.action_low)[emb]
    high = torch.as_tensor(table.action_high)[emb]
    assert torch.all(a[mask] >= low[mask]) and torch.all(a[mask] <= high[mask])
    # Bounds are actually hit (so clipping was exercised, not vacuous).
    assert torch.any(a[mask] == high[mask]) and torch.any(a[mask] == low[mask])


def test_stochastic_act_is_reproducible_with_generator():
    torch.manual_seed(0)
    table = _continuous_table()
    student = GeneralistStudent(table, SMALL)
    obs, emb = _batch(table)
    a1 = student.act(obs, emb, deterministic=False, generator=torch.Generator().manual_seed(3))
    a2 = student.act(obs, emb, deterministic=False, generator=torch.Generator().manual_seed(3))
    a3 = student.act(obs, emb, deterministic=False, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a1, a2)
    assert not torch.equal(a1, a3)
    det = student.act(obs, emb)
    torch.testing.assert_close(det, student.act(obs, emb))


def test_normalized_padding_stays_zero():
    table = _continuous_table()
    student = GeneralistStudent(table, SMALL)
    rng = np.random.default_rng(0)
    raw = rng.normal(4.0, 3.0, size=(30, 4))
    student.update_normalizer(raw, 2)  # pendulum: 4 real dims of 11
    z = student.normalize(torch.as_tensor(table.pad_obs(raw, 2)), torch.full((30,), 2))
    assert torch.all(z[:, 4:] == 0)
    assert torch.all(z[:, :4].abs() > 0)


def test_token_changes_output():
    torch.manual_seed(0)
    table = _continuous_table()
    student = GeneralistStudent(table, SMALL)
    _blow_up_head(student, 30.0)
    obs, _ = _batch(table, n_per=4)
    a = student(obs, torch.zeros(12, dtype=torch.long)).mean
    b = student(obs, torch.ones(12, dtype=torch.long)).mean
    assert not torch.allclose(a[:, :2], b[:, :2])


# --------------------------------------------------------------------------- normalizer
def test_update_normalizer_matches_numpy_and_is_order_independent():
    table = _continuous_table()
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=3.0, scale=s, size=(n, 8)) for n, s in ((5, 1.0), (50, 4.0), (1, 2.0),
                                                                      (17, 0.5))]
    batches.append(np.zeros((0, 8)))  # an empty batch is a no-op
    full = np.concatenate(batches)

    def fit(order):
        student = GeneralistStudent(table, SMALL)
        for i in order:
            student.update_normalizer(batches[i], 1)
        return student

    a = fit([0, 1, 2, 3, 4])
    b = fit([3, 4, 2, 0, 1])
    for s in (a, b):
        np.testing.assert_allclose(s.obs_mean[1, :8].numpy(), full.mean(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(s.obs_var[1, :8].numpy(), full.var(0), rtol=1e-10, atol=1e-12)
        assert s.obs_count[1].item() == len(full)
        # Padding of this embodiment and the other embodiments stay untouched.
        np.testing.assert_array_equal(s.obs_mean[1, 8:].numpy(), 0)
        np.testing.assert_array_equal(s.obs_var[1, 8:].numpy(), 1)
        for other in (0, 2):
            np.testing.assert_array_equal(s.obs_mean[other].numpy(), 0)
            np.testing.assert_array_equal(s.obs_var[other].numpy(), 1)
            assert s.obs_count[other].item() == 0
    np.testing.assert_allclose(a.obs_mean.numpy(), b.obs_mean.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.obs_var.numpy(), b.obs_var.numpy(), rtol=1e-12, atol=1e-12)


def test_normalize_uses_each_rows_embodiment_statistics():
    table = _continuous_table()
    student = GeneralistStudent(table, SMALL)
    rng = np.random.default_rng(1)
    x0 = rng.normal(5.0, 2.0, size=(400, 11))
    x2 = rng.normal(-3.0, 0.1, size=(400, 4))
    student.update_normalizer(x0, 0)
    student.update_normalizer(x2, 2)
    obs = torch.as_tensor(np.concatenate([table.pad_obs(x0, 0), table.pad_obs(x2, 2)]))
    emb = torch.as_tensor(np.repeat([0, 2], 400))
    z = student.normalize(obs, emb)
    for rows, d in ((slice(0, 400), 11), (slice(400, 800), 4)):
        np.testing.assert_allclose(z[rows, :d].mean(0).numpy(), 0, atol=1e-4)
        np.testing.assert_allclose(z[rows, :d].std(0, unbiased=False).numpy(), 1, atol=1e-3)
    assert z.abs().max() <= SMALL.obs_clip


def test_student_state_dict_round_trip():
    torch.manual_seed(0)
    table = _continuous_table()
    a = GeneralistStudent(table, SMALL)
    a.update_normalizer(np.random.default_rng(0).normal(size=(20, 11)), 0)
    b = GeneralistStudent(table, SMALL)
    b.load_state_dict(a.state_dict())
    obs, emb = _batch(table)
    torch.testing.assert_close(a.act(obs, emb), b.act(obs, emb))


@pytest.mark.parametrize("kwargs", [{"hidden": ()}, {"hidden": (0, 4)}, {"activation": "swish"},
                                    {"log_std_min": 1.0, "log_std_max": 1.0}])
def test_student_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        StudentConfig(**kwargs)


# --------------------------------------------------------------------------- discrete student
def test_discrete_student_masks_invalid_actions():
    torch.manual_seed(0)
    table = _discrete_table()
    student = GeneralistStudent(table, SMALL)
    _blow_up_head(student)
    obs, emb = _batch(table, n_per=40, scale=3.0)
    out = student(obs, emb)
    assert out.mean is None and out.log_std is None
    assert out.logits.shape == (120, 5)
    mask = torch.as_tensor(table.action_mask)[emb]
    assert torch.all(out.logits[~mask] == float("-inf"))
    assert torch.all(torch.isfinite(out.logits[mask]))
    n_actions = torch.as_tensor([e.action_dim for e in table.embodiments])[emb]
    greedy = student.act(obs, emb)
    assert greedy.shape == (120,)
    assert torch.all((greedy >= 0) & (greedy < n_actions))
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        sampled = student.act(obs, emb, deterministic=False, generator=gen)
        assert torch.all((sampled >= 0) & (sampled < n_actions))


def test_discrete_argmax_valid_even_when_padding_would_win():
    table = _discrete_table()
    student = GeneralistStudent(table, SMALL)
    with torch.no_grad():
        student.head.weight.zero_()
        student.head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 100.0]))  # action 4 dominates
    obs, emb = _batch(table)
    a = student.act(obs, emb)
    n_actions = torch.as_tensor([e.action_dim for e in table.embodiments])[emb]
    assert torch.all(a < n_actions)
    assert torch.all(a[emb == 0] == 4)  # the embodiment that has action 4 does pick it
    # unpad_action leaves discrete ids alone
    np.testing.assert_array_equal(table.unpad_action(a.numpy(), 1), a.numpy())


def test_fast_policy_equals_the_generic_forward_bit_for_bit() -> None:
    """The deployment fast path does act()'s arithmetic: the same actions, to the last bit, so
    evaluating through predict() gives the figures the training-time forward gives."""
    table = EmbodimentTable([
        Embodiment.from_spaces("a", gym.spaces.Box(-np.inf, np.inf, (11,)), gym.spaces.Box(-1, 1, (3,))),
        Embodiment.from_spaces("b", gym.spaces.Box(-np.inf, np.inf, (17,)), gym.spaces.Box(-0.5, 2, (6,))),
    ])
    torch.manual_seed(0)
    s = GeneralistStudent(table, StudentConfig(hidden=(32, 16), activation="tanh"))
    torch.nn.init.normal_(s.head.weight)  # actions far enough from 0 to hit the bounds
    rng = np.random.default_rng(0)
    s.update_normalizer(rng.normal(1.0, 3.0, (200, 11)), 0)
    for e, dim in ((0, 11), (1, 17)):
        for n in (1, 5, 64):
            obs = rng.normal(0, 20, (n, dim)).astype(np.float32)  # some clipped by obs_clip
            with torch.inference_mode():
                fast = s.policy(e)(torch.from_numpy(obs)).numpy()
            padded = torch.from_numpy(table.pad_obs(obs, e))
            slow = table.unpad_action(s.act(padded, torch.full((n,), e)).detach().numpy(), e)
            np.testing.assert_array_equal(fast, slow)
        low, high = table.action_low[e, : fast.shape[1]], table.action_high[e, : fast.shape[1]]
        assert ((fast == low) | (fast == high)).any()
    with torch.no_grad():  # it reads the live weights and statistics: never stale
        s.head.bias.add_(0.1)
    s.update_normalizer(rng.normal(0.0, 1.0, (50, 11)), 0)
    obs = rng.normal(0, 1, (4, 11)).astype(np.float32)
    padded = torch.from_numpy(table.pad_obs(obs, 0))
    slow = table.unpad_action(s.act(padded, torch.zeros(4, dtype=torch.long)).detach().numpy(), 0)
    with torch.inference_mode():
        np.testing.assert_array_equal(s.policy(0)(torch.from_numpy(obs)).numpy(), slow)
