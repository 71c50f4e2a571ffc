"""Network interpolation (ESRGAN paper sec. 3.4, Eq. 4; xinntao/ESRGAN ``net_interp.py``).

``theta = (1 - alpha) * theta_PSNR + alpha * theta_GAN`` on every state-dict entry, alpha in [0, 1]; both models
must share a key layout and shapes.  alpha = 0 gives the PSNR model and alpha = 1 the GAN model exactly.

Write an interpolated generator (BasicSR ``{params, params_ema}`` container, loadable here, in BasicSR and by
``predict.py``)::

    python -m scripts.interpolate PSNR.pth GAN.pth --alpha 0.8 --out interp_08.pth

Inputs may be BasicSR containers (``params_ema`` preferred, as BasicSR's ``load_network``), bare state dicts, or this
project's ``.ckpt`` files (the EMA generator).  ``python evaluate.py model=esrgan interp.psnr_weights=A
interp.gan_weights=B`` evaluates a sweep of alphas without writing files.
"""

import os
from collections import OrderedDict
from collections.abc import Mapping

import torch

from weights.io import load_generator_state

__all__ = ["interpolate_state_dicts", "load_and_interpolate", "save_state_dict"]


def _check_compatible(a: Mapping, b: Mapping, names: tuple[str, str]) -> None:
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    shape = sorted(k for k in set(a) & set(b) if tuple(a[k].shape) != tuple(b[k].shape))
    if only_a or only_b or shape:

        def few(keys):
            return f"{keys[:5]}{f' ... ({len(keys)} in all)' if len(keys) > 5 else ''}"

        parts = []
        if only_a:
            parts.append(f"keys only in {names[0]}: {few(only_a)}")
        if only_b:
            parts.append(f"keys only in {names[1]}: {few(only_b)}")
        if shape:
            parts.append(
                "shapes differ: " + ", ".join(f"{k} {tuple(a[k].shape)} vs {tuple(b[k].shape)}" for k in shape[:5])
            )
        raise ValueError(
            f"cannot interpolate {names[0]} and {names[1]}: the two generators must share the same key layout and "
            f"shapes (convert both to one layout first); " + "; ".join(parts)
        )


def interpolate_state_dicts(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float, names: tuple[str, str] = ("A", "B")
) -> "OrderedDict[str, torch.Tensor]":
    """``(1 - alpha) * a + alpha * b`` for every entry, in ``a``'s key order and each tensor's dtype.

    Floating-point entries are interpolated (alpha 0 / 1 return exact copies of ``a`` / ``b``); other entries
    (integer counters such as BatchNorm's ``num_batches_tracked``) are taken from the nearer endpoint.
    Raises ``ValueError`` naming the keys when the layouts or shapes differ, or when alpha is outside [0, 1].
    """
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0 = {names[0]}, 1 = {names[1]}), got {alpha}")
    _check_compatible(a, b, names)
    out = OrderedDict()
    for key, va in a.items():
        vb = b[key]
        if not (va.is_floating_point() or va.is_complex()):
            out[key] = (va if alpha < 0.5 else vb).detach().clone()
        elif alpha == 0.0:
            out[key] = va.detach().clone()
        elif alpha == 1.0:
            out[key] = vb.detach().clone()
        else:
            out[key] = ((1.0 - alpha) * va.detach() + alpha * vb.detach().to(va.dtype)).to(va.dtype)
    return out


def load_and_interpolate(psnr_path: str, gan_path: str, alpha: float, prefer: str = "params_ema"):
    """Interpolate two generator files (any layout :func:`weights.io.load_generator_state` reads)."""
    a = load_generator_state(psnr_path, prefer=prefer)
    b = load_generator_state(gan_path, prefer=prefer)
    from weights.io import check_finite

    check_finite(a, str(psnr_path))
    check_finite(b, str(gan_path))
    return interpolate_state_dicts(a, b, alpha, names=(str(psnr_path), str(gan_path)))


def save_state_dict(path: str, state: Mapping[str, torch.Tensor]) -> None:
    """Write ``state`` as BasicSR's ``{params, params_ema}`` container (both the same), atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cpu = OrderedDict((k, v.detach().cpu().clone()) for k, v in state.items())
    tmp = f"{path}.tmp"
    torch.save({"params": cpu, "params_ema": cpu}, tmp)
    os.replace(tmp, path)
