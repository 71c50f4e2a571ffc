"""Device and precision: where and how a generator runs."""

import logging

import torch

log = logging.getLogger(__name__)


PRECISIONS = ("fp32", "bf16")


# ---------------------------------------------------------------------------------------------------------------
# Running a network
# ---------------------------------------------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and device.type == "cpu":
        log.info("precision=bf16 on the CPU: allowed (autocast), but usually slower than fp32 there")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"precision=bf16: the GPU {torch.cuda.get_device_name(device)} does not support bfloat16; "
            "use precision=fp32"
        )


@torch.no_grad()
def run_net(net: torch.nn.Module, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """``net(x)`` under bf16 autocast when asked (weights stay fp32); the result is float32."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        y = net(x)
    return y.float()
