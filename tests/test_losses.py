"""Distillation losses: registry, zeros at the teacher, masking, scale balancing, optimisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Normal, kl_divergence

from polydistill.distill.losses import LOSSES, Loss, LossBatch, list_losses, make_loss
from polydistill.errors import ConfigError
from polydistill.students import GeneralistStudent, StudentConfig, StudentOutput
from polydistill.students.embodiment import Embodiment, EmbodimentTable

CONTINUOUS = [n for n in list_losses() if LOSSES[n]().action_kind == "continuous"]
DISCRETE = [n for n in list_losses() if LOSSES[n]().action_kind == "discrete"]


def _table() -> EmbodimentTable:
    return EmbodimentTable([
        Embodiment("wide", 6, "continuous", 4, (-1.0,) * 4, (1.0,) * 4),
        Embodiment("narrow", 3, "continuous", 2, (-2.0, -0.5), (2.0, 0.5)),
    ])


def _gauss_batch(n: int = 32, seed: int = 0):
    """A teacher batch over the two embodiments of :func:`_table`, and a different student."""
    g = torch.Generator().manual_seed(seed)
    table = _table()
    emb = torch.arange(n) % 2
    mask = torch.as_tensor(table.action_mask)[emb]
    scale = torch.as_tensor(table.action_scale)[emb]
    mean = torch.randn(n, 4, generator=g) * 0.5 * mask
    log_std = (torch.rand(n, 4, generator=g) - 1.5) * mask
    action = mean.clone()
    batch = LossBatch(action=action, mask=mask, scale=scale, mean=mean, log_std=log_std)
    s_mean = (mean + torch.randn(n, 4, generator=g) * 0.3) * mask
    s_log_std = (log_std + torch.randn(n, 4, generator=g) * 0.3) * mask
    return table, batch, StudentOutput(mean=s_mean, log_std=s_log_std)


# --------------------------------------------------------------------------- registry
def test_registry_names():
    names = list_losses()
    assert names == sorted(names)
    assert {"mse", "huber", "forward_kl", "reverse_kl", "symmetric_kl", "taid", "categorical_kl",
            "categorical_js"} <= set(names)
    assert CONTINUOUS and DISCRETE


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_builds(name):
    loss = make_loss(name)
    assert isinstance(loss, Loss)
    assert loss.name == name
    assert loss.action_kind in ("continuous", "discrete")


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        make_loss("l2")
    msg = str(info.value)
    assert "l2" in msg
    for name in list_losses():
        assert name in msg


@pytest.mark.parametrize(("name", "kwargs"), [
    ("mse", {"delta": 1.0}),
    ("huber", {"delta": 0.0}),
    ("huber", {"delta": -1.0}),
    ("taid", {"t_start": 1.5}),
    ("taid", {"ramp": 0.0}),
    ("categorical_kl", {"temperature": 0.0}),
    ("categorical_js", {"temperature": 2.0}),
])
def test_bad_loss_arguments(name, kwargs):
    with pytest.raises(ConfigError):
        make_loss(name, **kwargs)


def test_distribution_losses_need_teacher_distribution():
    _, batch, out = _gauss_batch()
    batch.mean = None
    batch.log_std = None
    for name in CONTINUOUS:
        loss = make_loss(name)
        if loss.needs_distribution:
            with pytest.raises(ConfigError, match="teacher"):
                loss(out, batch, 0.5)
        else:
            assert loss(out, batch, 0.5).shape == (32,)


# --------------------------------------------------------------------------- continuous
@pytest.mark.parametrize("name", CONTINUOUS)
@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_continuous_loss_zero_at_teacher_positive_elsewhere(name, progress):
    _, batch, out = _gauss_batch()
    loss = make_loss(name)
    same = StudentOutput(mean=batch.mean.clone(), log_std=batch.log_std.clone())
    zero = loss(same, batch, progress)
    assert zero.shape == (32,)
    torch.testing.assert_close(zero, torch.zeros(32), atol=1e-6, rtol=0)
    diff = loss(out, batch, progress)
    assert diff.shape == (32,)
    assert torch.all(torch.isfinite(diff))
    assert torch.all(diff > 0)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_masked_dims_never_contribute(name):
    _, batch, out = _gauss_batch()
    loss = make_loss(name)
    ref = loss(out, batch, 0.3)
    g = torch.Generator().manual_seed(1)
    pad = ~batch.mask
    assert pad.any()
    noisy = StudentOutput(
        mean=torch.where(pad, torch.randn(32, 4, generator=g) * 5, out.mean),
        log_std=torch.where(pad, torch.randn(32, 4, generator=g), out.log_std),
    )
    torch.testing.assert_close(loss(noisy, batch, 0.3), ref)
    # Nor do the teacher's values in padded dims.
    t_noisy = LossBatch(
        action=torch.where(pad, torch.randn(32, 4, generator=g) * 5, batch.action),
        mask=batch.mask, scale=batch.scale,
        mean=torch.where(pad, torch.randn(32, 4, generator=g) * 5, batch.mean),
        log_std=torch.where(pad, torch.randn(32, 4, generator=g), batch.log_std),
    )
    torch.testing.assert_close(loss(out, t_noisy, 0.3), ref)
    # And no gradient flows into padded dims.
    mean = noisy.mean.clone().requires_grad_(True)
    log_std = noisy.log_std.clone().requires_grad_(True)
    loss(StudentOutput(mean=mean, log_std=log_std), batch, 0.3).sum().backward()
    assert torch.all(mean.grad[pad] == 0)
    if log_std.grad is not None:
        assert torch.all(log_std.grad[pad] == 0)


def test_forward_kl_matches_torch_distributions():
    _, batch, out = _gauss_batch(seed=3)
    got = make_loss("forward_kl")(out, batch, 0.0)
    kl = kl_divergence(Normal(batch.mean, batch.log_std.exp()), Normal(out.mean, out.log_std.exp()))
    expected = (kl * batch.mask).sum(-1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_reverse_and_symmetric_kl_match_torch_distributions():
    _, batch, out = _gauss_batch(seed=4)
    teacher = Normal(batch.mean, batch.log_std.exp())
    student = Normal(out.mean, out.log_std.exp())
    fwd = (kl_divergence(teacher, student) * batch.mask).sum(-1)
    rev = (kl_divergence(student, teacher) * batch.mask).sum(-1)
    torch.testing.assert_close(make_loss("reverse_kl")(out, batch, 0.0), rev, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(make_loss("symmetric_kl")(out, batch, 0.0), (fwd + rev) / 2,
                               rtol=1e-5, atol=1e-6)


def test_taid_schedule():
    taid = make_loss("taid", t_start=0.2, ramp=0.5)
    assert taid.t(0.0) == pytest.approx(0.2)
    assert taid.t(0.25) == pytest.approx(0.6)
    assert taid.t(0.5) == pytest.approx(1.0)
    assert taid.t(1.0) == 1.0
    ts = [taid.t(p) for p in np.linspace(0, 1, 21)]
    assert all(b >= a for a, b in zip(ts, ts[1:], strict=False))
    assert min(ts) == pytest.approx(0.2) and max(ts) == 1.0
    default = make_loss("taid")
    assert default.t(0.0) == pytest.approx(default.t_start)
    assert default.t(1.0) == 1.0


def test_taid_at_end_is_forward_kl():
    _, batch, out = _gauss_batch(seed=5)
    torch.testing.assert_close(make_loss("taid")(out, batch, 1.0),
                               make_loss("forward_kl")(out, batch, 1.0))


def test_taid_early_target_is_closer_than_teacher():
    _, batch, out = _gauss_batch(seed=6)
    taid = make_loss("taid", t_start=0.3)
    early, late = taid(out, batch, 0.0).sum(), taid(out, batch, 1.0).sum()
    assert 0 < early < late


# --------------------------------------------------------------------------- balancing
@pytest.mark.parametrize("name", ["mse", "huber"])
def test_scale_balancing_across_embodiments(name):
    table = EmbodimentTable([
        Embodiment("small", 3, "continuous", 2, (-1.0, -1.0), (1.0, 1.0)),
        Embodiment("big", 3, "continuous", 2, (-10.0, -10.0), (10.0, 10.0)),
    ])
    g = torch.Generator().manual_seed(0)
    n = 16
    teacher = torch.rand(n, 2, generator=g) * 1.6 - 0.8
    student = teacher + torch.randn(n, 2, generator=g) * 0.05
    mask = torch.ones(n, 2, dtype=torch.bool)
    loss = make_loss(name)
    per_emb = []
    for e, factor in ((0, 1.0), (1, 10.0)):
        scale = torch.as_tensor(table.action_scale)[torch.full((n,), e)]
        batch = LossBatch(action=teacher * factor, mask=mask, scale=scale)
        per_emb.append(loss(StudentOutput(mean=student * factor), batch, 0.0))
    torch.testing.assert_close(per_emb[0], per_emb[1], rtol=1e-5, atol=1e-7)
    assert torch.all(per_emb[0] > 0)


def test_mse_definition_with_asymmetric_bounds():
    table = _table()
    _, batch, out = _gauss_batch(seed=2)
    expected = (((out.mean - batch.action) / batch.scale) ** 2 * batch.mask).sum(-1)
    torch.testing.assert_close(make_loss("mse")(out, batch, 0.0), expected)
    np.testing.assert_allclose(table.action_scale[1], [2.0, 0.5, 1.0, 1.0])


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "symmetric_kl"])
def test_kl_losses_are_invariant_to_action_units(name):
    _, batch, out = _gauss_batch(seed=7)
    loss = make_loss(name)
    k = 10.0
    scaled_batch = LossBatch(action=batch.action * k, mask=batch.mask, scale=batch.scale * k,
                             mean=batch.mean * k, log_std=batch.log_std + math.log(k) * batch.mask)
    scaled_out = StudentOutput(mean=out.mean * k, log_std=out.log_std + math.log(k) * batch.mask)
    torch.testing.assert_close(loss(scaled_out, scaled_batch, 0.0), loss(out, batch, 0.0),
                               rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- categorical
def _cat_batch(n: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n_actions = torch.tensor([5, 3])[torch.arange(n) % 2]
    mask = torch.arange(5)[None, :] < n_actions[:, None]
    zt = torch.randn(n, 5, generator=g) * 2
    zs = (torch.randn(n, 5, generator=g) * 2).masked_fill(~mask, float("-inf"))
    batch = LossBatch(action=zt.masked_fill(~mask, -math.inf).argmax(-1), mask=mask,
                      scale=torch.ones(n, 5), logits=zt)
    return batch, StudentOutput(logits=zs)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 5.0])
def test_categorical_kl_with_temperature(temperature):
    batch, out = _cat_batch()
    loss = make_loss("categorical_kl", temperature=temperature)
    got = loss(out, batch, 0.0)
    expected = []
    for i in range(batch.mask.shape[0]):
        m = batch.mask[i]
        p = Categorical(logits=batch.logits[i][m] / temperature)
        q = Categorical(logits=out.logits[i][m] / temperature)
        expected.append(kl_divergence(p, q) * temperature**2)
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-4, atol=1e-6)
    assert torch.all(got > 0)
    same = StudentOutput(logits=batch.logits.masked_fill(~batch.mask, float("-inf")))
    torch.testing.assert_close(loss(same, batch, 0.0), torch.zeros(got.shape[0]), atol=1e-6, rtol=0)


def test_categorical_kl_is_shift_invariant_and_ignores_padded_logits():
    batch, out = _cat_batch(seed=1)
    loss = make_loss("categorical_kl", temperature=2.0)
    ref = loss(out, batch, 0.0)
    shifted = LossBatch(action=batch.action, mask=batch.mask, scale=batch.scale,
                        logits=torch.where(batch.mask, batch.logits + 3.0, torch.full_like(
                            batch.logits, 1e3)))
    torch.testing.assert_close(loss(out, shifted, 0.0), ref, rtol=1e-4, atol=1e-5)


def test_categorical_js():
    batch, out = _cat_batch(seed=2)
    loss = make_loss("categorical_js")
    got = loss(out, batch, 0.0)
    assert torch.all(got > 0)
    assert torch.all(got <= math.log(2) + 1e-6)
    expected = []
    for i in range(batch.mask.shape[0]):
        m = batch.mask[i]
        p = torch.softmax(batch.logits[i][m], -1)
        q = torch.softmax(out.logits[i][m], -1)
        mid = Categorical(probs=(p + q) / 2)
        expected.append((kl_divergence(Categorical(probs=p), mid)
                         + kl_divergence(Categorical(probs=q), mid)) / 2)
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-4, atol=1e-6)
    same = StudentOutput(logits=batch.logits.masked_fill(~batch.mask, float("-inf")))
    torch.testing.assert_close(loss(same, batch, 0.0), torch.zeros(got.shape[0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", DISCRETE)
def test_categorical_gradients_are_finite(name):
    batch, out = _cat_batch(seed=3)
    raw = torch.randn(out.logits.shape, requires_grad=True)
    logits = raw.masked_fill(~batch.mask, float("-inf"))
    make_loss(name)(StudentOutput(logits=logits), batch, 0.0).sum().backward()
    assert torch.all(torch.isfinite(raw.grad))
    assert torch.all(raw.grad[~batch.mask] == 0)
    assert raw.grad[batch.mask].abs().sum() > 0


# --------------------------------------------------------------------------- optimisation
@pytest.mark.parametrize("name", CONTINUOUS)
def test_loss_goes_down_with_adam(name):
    torch.manual_seed(0)
    table = _table()
    student = GeneralistStudent(table, StudentConfig(hidden=(64, 64)))
    n = 64
    g = torch.Generator().manual_seed(1)
    emb = torch.arange(n) % 2
    obs = torch.randn(n, table.max_obs_dim, generator=g)
    obs[emb == 1, 3:] = 0.0  # the narrow body's padding
    student.update_normalizer(obs[emb == 0].numpy(), 0)
    student.update_normalizer(obs[emb == 1, :3].numpy(), 1)
    mask = torch.as_tensor(table.action_mask)[emb]
    scale = torch.as_tensor(table.action_scale)[emb]
    low, high = torch.as_tensor(table.action_low)[emb], torch.as_tensor(table.action_high)[emb]
    mean = (torch.rand(n, 4, generator=g) * (high - low) + low) * 0.8 * mask
    log_std = (torch.rand(n, 4, generator=g) - 1.5) * mask
    batch = LossBatch(action=mean, mask=mask, scale=scale, mean=mean, log_std=log_std)
    loss = make_loss(name)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    steps = 300

    def value(progress: float) -> float:
        with torch.no_grad():
            return float(loss(student(obs, emb), batch, progress).mean())

    before = value(1.0)
    for i in range(steps):
        opt.zero_grad()
        loss(student(obs, emb), batch, i / steps).mean().backward()
        opt.step()
    after = value(1.0)
    assert np.isfinite(after)
    assert after < 0.3 * before, (before, after)
