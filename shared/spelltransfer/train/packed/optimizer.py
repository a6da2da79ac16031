"""AdamW for K trials at once, over the flat ``[K, P]`` adapter buffer, each trial with its own lr.

The same arithmetic as ``torch.nn.utils.clip_grad_norm_`` followed by ``torch.optim.AdamW``
(``lerp`` first moment, bias corrections, decoupled decay), with every per-trial quantity a
``[K]`` vector broadcast over the trial's row. A trial that has finished (``active`` false)
keeps its weights unchanged.
"""

from __future__ import annotations

import math

import torch

from spelltransfer.train.packed.multi_lora import MultiLoRAWeights


class MultiTrialAdamW:
    def __init__(self, weights: MultiLoRAWeights, weight_decays: list[float], max_grad_norms: list[float | None],
                 betas: tuple[float, float], eps: float):
        self.weights = weights
        self.beta1, self.beta2 = betas
        self.eps = eps
        device = weights.flat.device
        self.exp_avg = torch.zeros_like(weights.flat)
        self.exp_avg_sq = torch.zeros_like(weights.flat)
        self.weight_decay = torch.tensor(weight_decays, dtype=torch.float32, device=device)
        self.max_norm = torch.tensor([n if n else math.inf for n in max_grad_norms], dtype=torch.float32, device=device)
        self.steps = [0] * weights.n_trials
        self.last_grad_norm: torch.Tensor | None = None

    def step(self, lrs: list[float], active: list[bool]) -> None:
        """One AdamW step for every active trial, at learning rates ``lrs`` (this step's values)."""
        for k, on in enumerate(active):
            if on:
                self.steps[k] += 1
        bc1 = [1 - self.beta1 ** max(t, 1) for t in self.steps]
        bc2 = [math.sqrt(1 - self.beta2 ** max(t, 1)) for t in self.steps]
        mask = [1.0 if on else 0.0 for on in active]
        host = torch.tensor([[lr * m / b for lr, m, b in zip(lrs, mask, bc1)],  # step size
                             [1.0 / b for b in bc2],                             # 1 / sqrt(bias correction 2)
                             [lr * m for lr, m in zip(lrs, mask)]], dtype=torch.float32)
        step_size, inv_bc2, lr_active = _to_device(host, self.weights.flat.device)

        grad, param = self.weights.grad, self.weights.flat
        norms = grad.pow(2).sum(1).sqrt()
        self.last_grad_norm = norms
        grad.mul_((self.max_norm / (norms + 1e-6)).clamp(max=1.0).unsqueeze(1))
        param.mul_((1 - lr_active * self.weight_decay).unsqueeze(1))
        self.exp_avg.lerp_(grad, 1 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        update = self.exp_avg_sq.sqrt()
        update.mul_(inv_bc2.unsqueeze(1)).add_(self.eps)
        torch.div(self.exp_avg, update, out=update)
        update.mul_(step_size.unsqueeze(1))
        param.sub_(update)

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "steps": list(self.steps)}


def _to_device(host: torch.Tensor, device) -> torch.Tensor:
    """Host -> device without a stream sync (pinned, non-blocking), so the CPU keeps queueing work."""
    if torch.device(device).type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)
