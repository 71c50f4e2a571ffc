"""Device and precision: where and how a generator runs."""

import ctypes
import ctypes.util
import logging
import sys

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


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def reuse_freed_memory(mmap_threshold_mb: int = 256) -> bool:
    """Keep the memory of freed tensors in the process for the next ones (glibc; elsewhere a no-op, False).

    glibc serves large allocations with ``mmap`` and hands memory freed at the top of its heap back to the system,
    so every forward pass of a network maps its activations anew and faults each page in again (kernel time,
    serialised between threads): SC-FEGAN at 512x512 spent 0.27 of 2.3 CPU-s in the kernel per forward on 2 threads,
    and 0.01 with this (benchmarks/cpu_inference.py; onnxruntime and TensorFlow keep arenas of their own).  Blocks up
    to ``mmap_threshold_mb`` now come from the heap, and up to twice that of free heap is kept; bigger arrays (a 16 MP
    upscale's output) are still mapped and returned when freed.  Call it in inference processes (app.py, predict.py);
    the process keeps its peak working set.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    for mb in (mmap_threshold_mb, 32):  # some glibc versions refuse thresholds above 32 MB
        if mallopt(_M_MMAP_THRESHOLD, mb << 20) == 1:
            return mallopt(_M_TRIM_THRESHOLD, 2 * mb << 20) == 1
    return False


@torch.no_grad()
def run_net(net: torch.nn.Module, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """``net(x)`` under bf16 autocast when asked (weights stay fp32); the result is float32."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        y = net(x)
    return y.float()
