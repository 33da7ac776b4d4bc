"""`training.optim.SAM` against SAM's and ASAM's update formulas worked out here by hand
(with `torch.autograd.grad` on separate copies of the weights), and its bookkeeping:
exact restoring, the closure form, state-dict round trips, schedulers, rho = 0."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.optim import SAM

# A fixed batch and fixed weights for nn.Linear(3, 1) under the MSE loss.
X = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 2.0], [-2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
Y = torch.tensor([[1.0], [0.0], [2.0], [-1.0]])
W0 = torch.tensor([[0.3, -0.2, 0.5]])
B0 = torch.tensor([0.1])


def linear() -> nn.Linear:
    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.copy_(W0)
        model.bias.copy_(B0)
    return model


def loss_at(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(X @ w.T + b, Y)


def grad_at(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss's gradient at (w, b), on fresh leaf copies (independent of any model)."""
    w = w.detach().clone().requires_grad_(True)
    b = b.detach().clone().requires_grad_(True)
    gw, gb = torch.autograd.grad(loss_at(w, b), (w, b))
    return gw, gb


def backward(model: nn.Module, x: torch.Tensor = X, y: torch.Tensor = Y) -> torch.Tensor:
    loss = F.mse_loss(model(x), y)
    loss.backward()
    return loss.detach()


def sam_update(model: nn.Module, opt: SAM, x: torch.Tensor = X, y: torch.Tensor = Y) -> None:
    """The two-step form."""
    backward(model, x, y)
    opt.first_step(zero_grad=True)
    backward(model, x, y)
    opt.second_step(zero_grad=True)


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))


def mlp_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    return torch.randn(32, 6, generator=gen), torch.randn(32, 2, generator=gen)


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# --------------------------------------------------------------------------- restoring


@pytest.mark.parametrize("adaptive", [False, True])
def test_second_step_restores_the_weights_exactly(adaptive):
    model = mlp(0)
    x, y = mlp_batch()
    before = weights(model)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, adaptive=adaptive, lr=0.0)
    backward(model, x, y)
    opt.first_step(zero_grad=True)
    moved = [p.detach() - w for p, w in zip(model.parameters(), before)]
    assert all(m.abs().max() > 0 for m in moved)  # first_step did perturb every tensor
    if not adaptive:  # the perturbation is a vector of length rho
        length = torch.linalg.vector_norm(torch.cat([m.flatten() for m in moved]))
        assert abs(length.item() - 0.5) < 1e-6
    backward(model, x, y)
    opt.second_step(zero_grad=True)  # lr = 0: the base step changes nothing
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), before))
    assert len(opt.state) == 0  # the copies of w are dropped once restored
    assert all(p.grad is None for p in model.parameters())  # zero_grad=True


# --------------------------------------------------------------------------- the formulas


def test_sam_step_matches_the_formula_with_sgd():
    rho, lr = 0.5, 0.1
    g = grad_at(W0, B0)
    norm = torch.sqrt(sum((t ** 2).sum() for t in g))
    e = [rho * t / norm for t in g]
    g2 = grad_at(W0 + e[0], B0 + e[1])
    expected = [W0 - lr * g2[0], B0 - lr * g2[1]]

    model = linear()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=lr)
    backward(model)
    opt.first_step(zero_grad=True)
    assert torch.allclose(model.weight, W0 + e[0], atol=1e-7, rtol=0)
    assert torch.allclose(model.bias, B0 + e[1], atol=1e-7, rtol=0)
    backward(model)
    opt.second_step(zero_grad=True)
    assert torch.allclose(model.weight, expected[0], atol=1e-6, rtol=0)
    assert torch.allclose(model.bias, expected[1], atol=1e-6, rtol=0)
    # ... which is not plain SGD's step (the test can tell them apart).
    assert (expected[0] - (W0 - lr * g[0])).abs().max() > 1e-3


def test_adaptive_step_matches_the_asam_formula():
    rho, lr = 0.5, 0.1
    g = grad_at(W0, B0)
    w = (W0, B0)
    norm = torch.sqrt(sum(((wi * gi) ** 2).sum() for wi, gi in zip(w, g)))  # || |w| g ||
    e = [rho * wi ** 2 * gi / norm for wi, gi in zip(w, g)]
    g2 = grad_at(W0 + e[0], B0 + e[1])
    expected = [W0 - lr * g2[0], B0 - lr * g2[1]]

    model = linear()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, adaptive=True, lr=lr)
    backward(model)
    opt.first_step(zero_grad=True)
    assert torch.allclose(model.weight, W0 + e[0], atol=1e-7, rtol=0)
    assert torch.allclose(model.bias, B0 + e[1], atol=1e-7, rtol=0)
    backward(model)
    opt.second_step(zero_grad=True)
    assert torch.allclose(model.weight, expected[0], atol=1e-6, rtol=0)
    assert torch.allclose(model.bias, expected[1], atol=1e-6, rtol=0)
    # ASAM's perturbation is not SAM's: e.g. the weight -0.2 moves 0.04x as far, not 1x.
    sam_e = rho * g[0] / torch.sqrt(sum((t ** 2).sum() for t in g))
    assert (e[0] - sam_e).abs().max() > 1e-2


def test_rho_per_group_and_the_global_norm():
    """Each group's rho scales its own part; the norm is over every group's gradient."""
    g = grad_at(W0, B0)
    norm = torch.sqrt(sum((t ** 2).sum() for t in g))
    model = linear()
    opt = SAM([{"params": [model.weight], "rho": 0.5}, {"params": [model.bias], "rho": 0.0}],
              torch.optim.SGD, rho=0.05, lr=0.1)
    backward(model)
    opt.first_step(zero_grad=True)
    assert torch.allclose(model.weight, W0 + 0.5 * g[0] / norm, atol=1e-7, rtol=0)
    assert torch.equal(model.bias, B0)
    opt.second_step(zero_grad=True)

    opt.param_groups[1]["rho"] = 0.2  # rho can be changed like lr
    model.weight.data.copy_(W0)
    model.bias.data.copy_(B0)
    backward(model)
    opt.first_step(zero_grad=True)
    assert torch.allclose(model.bias, B0 + 0.2 * g[1] / norm, atol=1e-7, rtol=0)


def test_parameters_without_a_gradient_are_skipped():
    model = linear()
    unused = nn.Parameter(torch.tensor([1.0, -2.0]))  # never in the loss: its grad stays None
    opt = SAM([*model.parameters(), unused], torch.optim.SGD, rho=0.5, lr=0.1)
    g = grad_at(W0, B0)
    norm = torch.sqrt(sum((t ** 2).sum() for t in g))
    backward(model)
    opt.first_step(zero_grad=True)
    assert torch.equal(unused.detach(), torch.tensor([1.0, -2.0]))
    assert unused not in opt.state
    assert torch.allclose(model.weight, W0 + 0.5 * g[0] / norm, atol=1e-7, rtol=0)  # norm without it
    backward(model)
    opt.second_step(zero_grad=True)
    assert torch.equal(unused.detach(), torch.tensor([1.0, -2.0]))


# --------------------------------------------------------------------------- closure form


def test_closure_form_equals_the_two_step_form():
    x, y = mlp_batch()
    two_step, closed = mlp(0), mlp(0)
    opt_a = SAM(two_step.parameters(), torch.optim.AdamW, rho=0.1, lr=1e-2, weight_decay=0.01)
    opt_b = SAM(closed.parameters(), torch.optim.AdamW, rho=0.1, lr=1e-2, weight_decay=0.01)

    def closure():
        opt_b.zero_grad()
        loss = F.mse_loss(closed(x), y)
        loss.backward()
        return loss

    for _ in range(3):
        with torch.no_grad():
            clean_loss = F.mse_loss(closed(x), y)
        sam_update(two_step, opt_a, x, y)
        loss = opt_b.step(closure)
        assert torch.equal(loss.detach(), clean_loss)  # the loss of the first evaluation, at w
    assert all(torch.equal(a, b) for a, b in zip(two_step.parameters(), closed.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(two_step.parameters(), mlp(0).parameters()))


def test_step_without_a_closure_raises():
    opt = SAM(linear().parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="closure"):
        opt.step()


# --------------------------------------------------------------------------- state dict


def _sam_adamw(model: nn.Module) -> SAM:
    return SAM(model.parameters(), torch.optim.AdamW, rho=0.1, lr=1e-2, weight_decay=0.05)


def _roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("mid_step", [False, True], ids=["between-updates", "after-first_step"])
def test_state_dict_round_trip_resumes_exactly(mid_step):
    x, y = mlp_batch()
    model_a = mlp(0)
    opt_a = _sam_adamw(model_a)
    for _ in range(3):
        sam_update(model_a, opt_a, x, y)
    if mid_step:  # saved between first_step and second_step: the copies of w travel too
        backward(model_a, x, y)
        opt_a.first_step(zero_grad=True)
    saved_model = _roundtrip(copy.deepcopy(model_a.state_dict()))
    saved_opt = _roundtrip(opt_a.state_dict())
    assert saved_opt["base_optimizer"]["state"]  # AdamW's moments are in it

    model_b = mlp(1)  # other weights and a fresh optimizer, then loaded
    model_b.load_state_dict(saved_model)
    opt_b = _sam_adamw(model_b)
    opt_b.load_state_dict(saved_opt)
    model_c = mlp(1)  # the same weights without the optimizer's state
    model_c.load_state_dict(saved_model)
    opt_c = _sam_adamw(model_c)

    for model, opt in ((model_a, opt_a), (model_b, opt_b), (model_c, opt_c)):
        if mid_step:
            backward(model, x, y)
            opt.second_step(zero_grad=True)
        for _ in range(3):
            sam_update(model, opt, x, y)
    assert all(torch.equal(a, b) for a, b in zip(model_a.parameters(), model_b.parameters()))
    assert not all(torch.equal(a, c) for a, c in zip(model_a.parameters(), model_c.parameters()))

    # After loading, the base optimizer still shares SAM's groups.
    assert opt_b.base_optimizer.param_groups is opt_b.param_groups
    opt_b.param_groups[0]["lr"] = 0.123
    assert opt_b.base_optimizer.param_groups[0]["lr"] == 0.123


def test_load_state_dict_rejects_a_plain_optimizer_state_dict():
    model = linear()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="base_optimizer"):
        opt.load_state_dict(torch.optim.SGD(model.parameters(), lr=0.1).state_dict())


# --------------------------------------------------------------------------- groups and schedulers


def test_scheduler_on_sam_changes_the_base_optimizer_lr():
    model = linear()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.0, lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5 ** epoch)
    sam_update(model, opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "scheduler before optimizer" warning for the two-step form
        scheduler.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)

    # Measured: the next update is -0.05 g (rho = 0, so the gradient is the one at w).
    before = weights(model)
    g = grad_at(*before)
    sam_update(model, opt)
    assert torch.allclose(model.weight - before[0], -0.05 * g[0], atol=1e-7, rtol=0)
    assert torch.allclose(model.bias - before[1], -0.05 * g[1], atol=1e-7, rtol=0)


def test_added_param_group_reaches_the_base_optimizer():
    model = linear()
    opt = SAM([model.weight], torch.optim.SGD, rho=0.0, lr=0.1)
    opt.add_param_group({"params": [model.bias], "lr": 1.0})
    assert len(opt.base_optimizer.param_groups) == 2
    assert opt.param_groups[1]["rho"] == 0.0 and opt.param_groups[1]["momentum"] == 0
    g = grad_at(W0, B0)
    sam_update(model, opt)
    assert torch.allclose(model.bias, B0 - 1.0 * g[1], atol=1e-7, rtol=0)


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("base, kwargs", [
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.05}),
])
def test_rho_zero_equals_the_base_optimizer_alone(base, kwargs):
    x, y = mlp_batch()
    sam_model, base_model = mlp(0), mlp(0)
    sam = SAM(sam_model.parameters(), base, rho=0.0, **kwargs)
    plain = base(base_model.parameters(), **kwargs)
    for _ in range(4):
        sam_update(sam_model, sam, x, y)
        plain.zero_grad()
        backward(base_model, x, y)
        plain.step()
    assert all(torch.equal(a, b) for a, b in zip(sam_model.parameters(), base_model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(sam_model.parameters(), mlp(0).parameters()))


@pytest.mark.parametrize("adaptive", [False, True])
def test_zero_gradient_gives_no_nan(adaptive):
    model = linear()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, adaptive=adaptive, lr=0.1)
    (model(X) * 0.0).sum().backward()  # a real, all-zero gradient
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())
    opt.first_step(zero_grad=False)
    assert torch.equal(model.weight, W0) and torch.equal(model.bias, B0)
    opt.second_step(zero_grad=True)
    assert torch.equal(model.weight, W0) and torch.equal(model.bias, B0)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("rho", [-0.1, float("nan")])
def test_negative_rho_raises(rho):
    model = linear()
    with pytest.raises(ValueError, match="rho"):
        SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=0.1)
    with pytest.raises(ValueError, match="rho"):
        SAM([{"params": [model.weight], "rho": rho}], torch.optim.SGD, lr=0.1)
    opt = SAM([model.weight], torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="rho"):
        opt.add_param_group({"params": [model.bias], "rho": rho})
