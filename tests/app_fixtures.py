"""Tiny generator weights and images for the app tests (random-init networks, written with the project's own
save functions; real weights cannot be downloaded here)."""

from pathlib import Path

import numpy as np
import torch

from archs.rrdbnet import RRDBNet
from archs.scfegan_generator import SCFEGANGenerator
from weights.io import save_generator_file, save_generator_weights
from weights.layouts import basicsr_to_esrgan_layout, scfegan_config

TINY_SR = dict(num_feat=8, num_block=1, num_grow_ch=4)


def tiny_face_net(seed: int = 0) -> SCFEGANGenerator:
    torch.manual_seed(seed)
    net = SCFEGANGenerator(cnum=4).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.3, 0.3)  # outputs far from the inputs, so a regenerated pixel differs
    return net


def tiny_sr_net(seed: int) -> RRDBNet:
    torch.manual_seed(seed)
    net = RRDBNet(**TINY_SR).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        net.conv_last.bias.fill_(0.5)
    return net


def write_weights(root: Path) -> dict:
    """face.pth (exported-style file recording the architecture and a 128 working size), psnr.pth (project
    {params, params_ema}), gan.pth (xinntao/ESRGAN layout, bare): the three kinds of files the app must read."""
    root.mkdir(parents=True, exist_ok=True)
    face = tiny_face_net()
    save_generator_file(root / "face.pth", face, scfegan_config(face.state_dict()), {"input_size": 128})
    psnr, gan = tiny_sr_net(1), tiny_sr_net(2)
    save_generator_weights(root / "psnr.pth", psnr)
    torch.save(basicsr_to_esrgan_layout(gan.state_dict(), "xinntao"), root / "gan.pth")
    return {
        "face": root / "face.pth",
        "psnr": root / "psnr.pth",
        "gan": root / "gan.pth",
        "psnr_net": psnr,
        "gan_net": gan,
    }


def random_rgb(h: int, w: int, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, (h, w, 3), dtype=dtype)


def app_overrides(w: dict) -> list[str]:
    return ["device=cpu", f"weights={w['face']}", f"sr_weights={w['gan']}", f"sr_psnr_weights={w['psnr']}"]
