"""Which generators the app runs: the files given on the command line, else the newest demo run under ``logs/``.

Everything is loaded through ``inference.run.load_model`` (so every layout ``weights.io.build_generator`` reads
works here too), once, and cached.  ESRGAN network interpolation (paper Eq. 4) uses
``weights.interpolate.interpolate_state_dicts`` on the two loaded state dicts; the interpolated weights are loaded
into one network copy, so moving the slider costs a state-dict blend, not a file read.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from inference.device import pick_device
from inference.faces import bgr_of, resolve_noise, working_size
from inference.run import load_model
from inference.tiling import image_channels
from weights.interpolate import interpolate_state_dicts

log = logging.getLogger(__name__)


class MissingWeights(RuntimeError):
    """No weights were given and no demo run was found; the message says what to pass."""


def newest(pattern: str) -> str | None:
    """The most recently modified file matching the glob ``pattern`` (None when there is none)."""
    files = [f for f in glob.glob(pattern) if os.path.isfile(f)]
    return max(files, key=os.path.getmtime) if files else None


def run_resolution(weights: str) -> int | None:
    """``data.resolution`` of the training run a checkpoint belongs to (``<run>/.hydra/config.yaml``).

    A project checkpoint does not record the image size it was trained at; the SC-FEGAN demo trains at 128,
    and running it at the default 512 would be a different input distribution.  None when not found.
    """
    run = os.path.dirname(os.path.dirname(os.path.abspath(weights)))  # <run>/checkpoints/x.ckpt, <run>/weights/x.pth
    cfg_file = os.path.join(run, ".hydra", "config.yaml")
    if not os.path.isfile(cfg_file):
        return None
    try:
        res = OmegaConf.select(OmegaConf.load(cfg_file), "data.resolution")
    except Exception:  # noqa: BLE001  an unreadable run config only loses this hint
        return None
    return int(res) if isinstance(res, int) else None


@dataclass
class FaceModel:
    net: torch.nn.Module
    path: str
    size: tuple[int, int]  # working size (H, W) of the network
    bgr: bool
    description: str
    noise: str = (
        "binary16"  # the noise kind fed (inference.faces.resolve_noise: the weights' training noise by default)
    )


@dataclass
class SRModel:
    """One ESRGAN generator, or the two ends of a network interpolation (``psnr_state`` set)."""

    net: torch.nn.Module
    gan_state: dict
    psnr_state: dict | None
    description: str
    alpha: float | None = None  # the interpolation currently loaded into ``net``
    outscale: float | None = None  # the weights' own resize of the result (meta["outscale"], as predict.py)

    @property
    def scale(self) -> int:
        """The network's factor."""
        return int(self.net.scale)

    @property
    def out_scale(self) -> int:
        """The result's factor: ``outscale`` when the weights record one (realesr-animevideov3-x2 / -x3: the x4
        network, then a bicubic resize), else the network's."""
        return int(self.outscale) if self.outscale else self.scale


class ModelStore:
    """Loads the app's generators lazily (first request or ``preload``) and keeps them.

    ``cfg``: the app config (``conf/app.yaml``): ``weights``, ``sr_weights``, ``sr_psnr_weights``, ``demo_runs``,
    ``face.*``, ``device``, ``use_ema``.
    """

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.device = pick_device(str(cfg.device))
        self._face: FaceModel | None = None
        self._sr: SRModel | None = None
        self._lock = threading.Lock()  # Gradio runs handlers in worker threads

    # -- which files -------------------------------------------------------------------------------------------------
    def face_weights(self) -> tuple[str | None, str]:
        """(path or None, how it was chosen)."""
        if self.cfg.get("weights"):
            return os.path.expanduser(str(self.cfg.weights)), "weights="
        found = newest(os.path.join(str(self.cfg.demo_runs.face), "*", "checkpoints", "last.ckpt"))
        return found, "newest demo run"

    def sr_weights(self) -> tuple[str | None, str | None, str]:
        """(GAN or only weights, PSNR weights or None, how they were chosen)."""
        if self.cfg.get("sr_weights") or self.cfg.get("sr_psnr_weights"):
            gan = self.cfg.get("sr_weights") or self.cfg.get("sr_psnr_weights")
            psnr = self.cfg.get("sr_psnr_weights") if self.cfg.get("sr_weights") else None
            return os.path.expanduser(str(gan)), (os.path.expanduser(str(psnr)) if psnr else None), "sr_weights="
        # The ESRGAN demo writes weights/net_g_psnr.pth at the stage switch and net_g_gan.pth at the end.
        root = str(self.cfg.demo_runs.sr)
        gan = newest(os.path.join(root, "*", "weights", "net_g_gan.pth"))
        if gan:
            psnr = os.path.join(os.path.dirname(gan), "net_g_psnr.pth")
            return gan, (psnr if os.path.isfile(psnr) else None), "newest demo run"
        psnr = newest(os.path.join(root, "*", "weights", "net_g_psnr.pth"))
        if psnr or not self.cfg.get("default_sr_weights"):
            return psnr, None, "newest demo run"
        # Real weights rather than nothing: a named model (weights/named.py), converted on first use.
        return str(self.cfg.default_sr_weights), None, "default_sr_weights="

    def face_missing_message(self) -> str:
        return (
            "No SC-FEGAN weights: start the app with `weights=PATH` (the converted official checkpoint "
            "`python -m scripts.scfegan_convert ... --out G.pth`, an exported `.safetensors` / TorchScript file, or "
            "a project `.ckpt`), or train the demo (`python train.py experiment=scfegan_demo`), whose newest "
            f"checkpoint under `{self.cfg.demo_runs.face}` is then used."
        )

    def sr_missing_message(self) -> str:
        return (
            "No ESRGAN weights (default_sr_weights=null): start the app with `sr_weights=PATH_OR_NAME` (any layout `predict.py` reads: this "
            "project's `.ckpt` / `net_g_*.pth`, BasicSR, xinntao/ESRGAN, the 2018 sequential file, exports) and, "
            "for network interpolation, `sr_psnr_weights=PATH`; or train the demo "
            f"(`python train.py experiment=demo`), whose newest run under `{self.cfg.demo_runs.sr}` is then used."
        )

    # -- loading ------------------------------------------------------------------------------------------------------
    def _load(self, path: str, kind: str):
        sub = OmegaConf.create(
            {
                "weights": path,
                "use_ema": bool(self.cfg.get("use_ema", True)),
                "model": {
                    "generator": OmegaConf.to_container(self.cfg.face.generator, resolve=True)
                    if kind == "scfegan"
                    else None
                },
            }
        )
        return load_model(sub, kind)

    def face(self) -> FaceModel:
        with self._lock:
            if self._face is None:
                path, how = self.face_weights()
                if path is None:
                    raise MissingWeights(self.face_missing_message())
                net, info = self._load(path, "scfegan")
                size, source = self.cfg.face.size, None
                if size in (None, "auto") and "input_size" not in info.meta:
                    size = run_resolution(path) or "auto"
                    if size != "auto":
                        source = f"the run's .hydra/config.yaml data.resolution ({path})"
                hw = working_size(size, info.meta, source)
                bgr = bgr_of(OmegaConf.create({"bgr": self.cfg.face.bgr}), info.meta)
                noise = resolve_noise(self.cfg.face.get("noise", "auto"), info.meta, f"weights {path}")
                g = info.generator or {}
                desc = (
                    f"`{path}` ({how}; {info.container}, cnum {g.get('cnum', '?')}, works at {hw[1]}x{hw[0]}, "
                    f"{'BGR' if bgr else 'RGB'}, noise {noise})"
                )
                net = net.to(self.device)
                if self.device.type == "cpu":  # oneDNN convolutions: measured ~12 % less CPU time at 512x512
                    net = net.to(memory_format=torch.channels_last)
                self._face = FaceModel(net, path, hw, bgr, desc, noise)
                log.info(f"face model: {desc}")
            return self._face

    def sr(self) -> SRModel:
        with self._lock:
            if self._sr is None:
                gan_path, psnr_path, how = self.sr_weights()
                if gan_path is None:
                    raise MissingWeights(self.sr_missing_message())
                net, info = self._load(gan_path, "esrgan")
                if image_channels(net) != (3, 3):
                    raise ValueError(f"{gan_path}: the app runs 3-channel (RGB) ESRGAN networks")
                psnr_state = None
                desc = f"`{gan_path}` ({how}; {info.meta.get('layout', info.container)}, x{net.scale})"
                if psnr_path:
                    _, pinfo = self._load(psnr_path, "esrgan")
                    # Same keys and shapes, or a ValueError naming the difference (raised here, at start-up).
                    interpolate_state_dicts(pinfo.state, info.state, 0.0, names=(psnr_path, gan_path))
                    psnr_state = pinfo.state
                    desc = f"PSNR `{psnr_path}` <-> GAN {desc}"
                outscale = info.meta.get("outscale")
                if outscale is not None and float(outscale) != net.scale:
                    desc += f", results resized to x{float(outscale):g}"
                self._sr = SRModel(
                    net.to(self.device), info.state, psnr_state, desc, alpha=1.0, outscale=outscale or None
                )
                log.info(f"SR model: {desc}")
            return self._sr

    def sr_at(self, alpha: float) -> SRModel:
        """The ESRGAN generator with ``(1 - alpha) * PSNR + alpha * GAN`` loaded (Eq. 4; alpha ignored without
        PSNR weights)."""
        m = self.sr()
        with self._lock:
            if m.psnr_state is not None and m.alpha != float(alpha):
                state = interpolate_state_dicts(m.psnr_state, m.gan_state, float(alpha))
                m.net.load_state_dict(state)
                m.alpha = float(alpha)
            return m

    def preload(self) -> dict:
        """Load both models now; returns ``{"face": message, "sr": message}`` (a description, or what to pass)."""
        out = {}
        for key, getter in (("face", self.face), ("sr", self.sr)):
            try:
                out[key] = "Weights: " + getter().description
            except MissingWeights as err:
                out[key] = str(err)
            except (ValueError, FileNotFoundError) as err:
                out[key] = f"Cannot load the {'SC-FEGAN' if key == 'face' else 'ESRGAN'} weights: {err}"
        return out
