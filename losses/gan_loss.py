"""Relativistic average GAN (RaGAN) losses exactly as BasicSR's ``ESRGANModel`` computes them,
with ``GANLoss(gan_type='vanilla')`` = BCE-with-logits against targets 1.0 / 0.0 (mean).

All functions return *unweighted* losses.  The caller applies the weights: 5e-3 on the
generator loss in ESRGAN stage 2; the discriminator loss is unweighted in BasicSR (``GANLoss``
applies ``loss_weight`` only when ``is_disc=False``).

Which inputs are detached, and why
----------------------------------
BasicSR splits the discriminator loss into a real half and a fake half, each with its own
backward, and detaches the *other* side's logits in each half (PR #278, issue #277).  D has
BatchNorm; under DDP with ``broadcast_buffers=True`` the BN buffers are re-broadcast before every
forward of the wrapped D, so two D forwards feeding one backward hit "modified by an inplace
operation".  Splitting (one D forward per backward) avoids it, and detaching the mean of the
other side is what makes the split exact.  The older single-loss formulation also back-propagated
through the means (cross-gradients); the maintainers report no notable difference in results.
We keep the split formulation for gradient parity with BasicSR.

* G step: ``real_logits`` = ``D(gt).detach()`` (D is not being trained; no graph needed),
  ``fake_logits`` = ``D(G(lq))`` with graph: G gets gradient through both terms, directly via
  ``C_f - mean(C_r)`` and through ``mean(C_f)`` in ``C_r - mean(C_f)``.
* D real half: ``real_logits`` = ``D(gt)``, ``fake_logits`` = ``D(G(lq)).detach()``.
* D fake half: ``fake_logits`` = ``D(G(lq).detach())``, ``real_logits`` = the real half's
  ``C_r`` detached.

The functions detach the "detached" arguments themselves as well, so passing a tensor with a
graph cannot silently change the gradients; callers should still detach to avoid keeping the
graph alive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def vanilla_gan_loss(logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """BCE-with-logits against a constant target 1.0 (real) or 0.0 (fake), mean-reduced.

    Equals ``mean(-log(sigmoid(x)))`` for real and ``mean(-log(1 - sigmoid(x)))`` for fake.
    """
    target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def ragan_generator_loss(real_logits_detached: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``0.5 * [BCE(C_r - mean(C_f), 0) + BCE(C_f - mean(C_r), 1)]`` (BasicSR ``l_g_gan`` / 5e-3).

    ``real_logits_detached`` = ``D(gt).detach()``; ``fake_logits`` = ``D(G(lq))`` with its graph.
    """
    real = real_logits_detached.detach()
    l_g_real = vanilla_gan_loss(real - torch.mean(fake_logits), False)
    l_g_fake = vanilla_gan_loss(fake_logits - torch.mean(real), True)
    return (l_g_real + l_g_fake) / 2


def ragan_discriminator_real_loss(real_logits: torch.Tensor, fake_logits_detached: torch.Tensor) -> torch.Tensor:
    """``0.5 * BCE(C_r - mean(C_f'), 1)`` with ``C_f' = D(G(lq)).detach()`` (BasicSR ``l_d_real``)."""
    return vanilla_gan_loss(real_logits - torch.mean(fake_logits_detached.detach()), True) * 0.5


def ragan_discriminator_fake_loss(fake_logits: torch.Tensor, real_logits_detached: torch.Tensor) -> torch.Tensor:
    """``0.5 * BCE(C_f - mean(C_r.detach()), 0)`` with ``C_f = D(G(lq).detach())`` (BasicSR ``l_d_fake``)."""
    return vanilla_gan_loss(fake_logits - torch.mean(real_logits_detached.detach()), False) * 0.5
