"""Sharpness-aware minimisation (SAM, Foret et al., ICLR 2021) around any torch optimizer.

SAM minimises the worst loss in a small ball around the weights,
``min_w max_{||e|| <= rho} L(w + e)``, with a first-order approximation of the inner
maximum.  Each update takes two gradient evaluations on the same batch:

1. ``g = grad L(w)``; the ascent step ``e(w) = rho * g / ||g||`` (``||.||`` the global L2
   norm over every parameter that has a gradient);
2. ``g' = grad L(w + e(w))``; the weights go back to ``w`` and the base optimizer steps
   with ``g'`` in place of ``g``.

With ``adaptive=True`` it is ASAM (Kwon et al., ICML 2021), whose ball is scaled by the
weights: ``e(w) = rho * w^2 * g / ||w * g||`` (element-wise; the norm of ``|w| * g``),
which makes the perturbation invariant to a rescaling of the weights.  ASAM's ``rho`` is
usually ~10x SAM's (e.g. 0.5 against 0.05).

Usage, the two-step form (what the training loop does)::

    optimizer = SAM(model.parameters(), torch.optim.AdamW, rho=0.05, lr=1e-4, weight_decay=0.01)

    loss_fn(model(x), y).backward()           # gradient at w
    optimizer.first_step(zero_grad=True)      # w <- w + e(w)
    loss_fn(model(x), y).backward()           # gradient at w + e(w), same batch
    optimizer.second_step(zero_grad=True)     # w <- w, then the base optimizer's step

or the closure form, ``optimizer.step(closure)``, with a closure that does zero_grad,
forward and backward and returns the loss (`SAM.step` calls it twice).

The base optimizer is built on SAM's own ``param_groups`` (the same list and the same
dicts), so a learning-rate scheduler attached to the SAM object, and any change to a
group's ``lr``, reach the base optimizer; ``rho`` and ``adaptive`` live in each group
too.  `SAM.state_dict` holds the base optimizer's state (AdamW's moments, SGD's
momentum) as well as SAM's, so a resumed run continues exactly.

Written after the reference implementations davda54/sam (``sam.py``) and
mapooon/SelfBlendedImages (``src/utils/sam.py``, the SBI detector's training); unlike
those, the state dict carries the base optimizer's state, the closure form evaluates the
loss at ``w`` itself, and the weights are restored from a copy rather than by subtracting
``e(w)`` (so restoring is exact).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

EPS = 1e-12
"""Added to the gradient norm, so that a zero gradient gives a zero perturbation, not NaN."""


def _check_rho(rho: float) -> None:
    if not rho >= 0.0:  # also rejects NaN
        raise ValueError(f"SAM's rho must be >= 0, got {rho!r}")


def _norm_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a per-parameter norm is accumulated in: at least float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation wrapping ``base_optimizer`` (a class, e.g.
    ``torch.optim.AdamW``), which is built as ``base_optimizer(self.param_groups,
    **base_kwargs)``.

    Args:
        params: the parameters or parameter groups, as for any torch optimizer; a group
            may set its own ``rho`` and ``adaptive`` as well as the base optimizer's options.
        base_optimizer: the optimizer class that makes the actual update.
        rho: the radius of the neighbourhood (>= 0; 0 is the base optimizer alone).
        adaptive: ASAM's weight-scaled perturbation instead of SAM's.
        **base_kwargs: the base optimizer's options (``lr``, ``weight_decay``, ...).
    """

    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer], rho: float = 0.05,
                 adaptive: bool = False, **base_kwargs: Any) -> None:
        _check_rho(rho)
        defaults = dict(rho=rho, adaptive=adaptive, **base_kwargs)
        super().__init__(params, defaults)
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        # The base optimizer keeps the same group dicts; share the list too, so that groups
        # added later and `load_state_dict`'s new dicts are seen by both.
        self.base_optimizer.param_groups = self.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.defaults.update(rho=rho, adaptive=adaptive)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _check_rho(param_group.get("rho", self.defaults["rho"]))
        base = self.__dict__.get("base_optimizer")
        if base is None:  # during __init__: the base optimizer is not built yet
            super().add_param_group(param_group)
            return
        base.add_param_group(param_group)  # appends to the shared list, fills the base's defaults
        for name, default in self.defaults.items():
            param_group.setdefault(name, default)

    # ------------------------------------------------------------------ the two steps

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor | None:
        """The global L2 norm of the gradients (adaptive groups: of ``|w| * g``) over every
        parameter with a gradient, on the first such parameter's device; None if none has one."""
        norms: list[torch.Tensor] = []
        device: torch.device | None = None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if device is None:
                    device = p.device
                x = p.grad * p.abs() if group["adaptive"] else p.grad
                norms.append(torch.linalg.vector_norm(x, 2, dtype=_norm_dtype(x.dtype)))
        if not norms:
            return None
        dtype = torch.float64 if any(n.dtype == torch.float64 for n in norms) else torch.float32
        return torch.linalg.vector_norm(torch.stack([n.to(device=device, dtype=dtype) for n in norms]), 2)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """``w <- w + e(w)``, ``e = rho * g / ||g||`` (adaptive: ``rho * w^2 * g / ||w g||``)
        from the gradients now in ``.grad``; a copy of ``w`` is kept for `second_step`.
        Parameters without a gradient are left alone."""
        grad_norm = self._grad_norm()
        if grad_norm is not None:
            for group in self.param_groups:
                scale = group["rho"] / (grad_norm + EPS)
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    self.state[p]["old_p"] = p.detach().clone()
                    e_w = p.grad * scale.to(device=p.device, dtype=p.dtype)
                    if group["adaptive"]:
                        e_w = e_w * p * p
                    p.add_(e_w)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore the weights `first_step` perturbed (exactly, from its copy), then the
        base optimizer's step with the gradients now in ``.grad`` (those at ``w + e(w)``)."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state and "old_p" in state:
                    p.copy_(state.pop("old_p"))
                    if not state:
                        del self.state[p]
        self.base_optimizer.step()
        # What the LR scheduler's wrapper of `step` records; without it the two-step form
        # draws its "lr_scheduler.step() before optimizer.step()" warning.
        self._opt_called = True
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One SAM update in the closure form.

        ``closure`` must zero the gradients, run the forward and backward pass on the batch
        and return the loss.  `step` calls it at ``w``, takes `first_step`, calls it again
        at ``w + e(w)`` and takes `second_step`.  Returns the loss of the first evaluation
        (the loss at the weights before the update, what a training log reports).  The
        gradients at ``w + e(w)`` are left in ``.grad``.
        """
        if closure is None:
            raise ValueError("SAM.step needs a closure (zero_grad + forward + backward, returning "
                             "the loss); or call first_step() and second_step()")
        closure = torch.enable_grad()(closure)
        loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        # The base optimizer has the same parameters: one pass clears both.
        super().zero_grad(set_to_none=set_to_none)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """SAM's state dict (its groups, with ``rho`` and the base options, and the weight
        copies of a `first_step` not yet undone) plus ``"base_optimizer"``: the base
        optimizer's own state dict."""
        state_dict = super().state_dict()
        state_dict["base_optimizer"] = self.base_optimizer.state_dict()
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        if "base_optimizer" not in state_dict:
            raise ValueError("not a SAM state dict: it has no 'base_optimizer' entry")
        self.base_optimizer.load_state_dict(state_dict.pop("base_optimizer"))
        super().load_state_dict(state_dict)
        # Both loads built new group dicts; SAM's (with the same values) are the shared ones.
        self.base_optimizer.param_groups = self.param_groups
