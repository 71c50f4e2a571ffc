"""Files from strangers, round 2 (issue 16): TorchScript and hub-cache payloads never run, tools never overwrite
their inputs or existing outputs, non-finite weights are refused, sizes from files are bounded.

The payloads are harmless: each would create a marker file, and each test asserts that the marker does not exist.
"""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose_cfg, write_png
from archs.rrdbnet import RRDBNet
from archs.weights_io import build_generator, read_generator_file, save_generator_file

ROOT = Path(__file__).resolve().parents[1]
TINY = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4}
TINY_G = {"_target_": "archs.rrdbnet.RRDBNet", "scale": 4, **TINY}


class Payload:
    """Unpickling this creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tiny_rrdb(seed=0):
    torch.manual_seed(seed)
    return RRDBNet(scale=4, **TINY).eval()


class _Evil(torch.nn.Module):
    """A TorchScript module whose ``__setstate__`` (run by torch.jit.load) creates ``marker`` (torch.from_file
    with shared=True creates the file it maps)."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    @torch.jit.export
    def __getstate__(self):
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]):
        self.marker = state[0]
        self.training = state[1]
        t = torch.from_file(self.marker, shared=True, size=4, dtype=torch.uint8)
        t.fill_(65)
        self.marker = self.marker + str(int(t.sum()))

    def forward(self, x):
        return x


class _EvilGenerator(torch.nn.Module):
    """The tiny RRDBNet's tensors at the top level (as an exported generator has them) plus the payload."""

    def __init__(self, marker: str):
        super().__init__()
        net = tiny_rrdb()
        for name, child in net.named_children():
            self.add_module(name, child)
        self.evil = _Evil(marker)

    def forward(self, x):
        return self.evil(self.conv_first(x))


def evil_torchscript(path: Path, marker: Path) -> Path:
    torch.jit.save(torch.jit.script(_EvilGenerator(str(marker))), str(path),
                   _extra_files={"generator_meta.json": '{"generator": ' + str(TINY_G).replace("'", '"').replace(
                       "True", "true") + "}"})
    return path


def test_payload_really_runs_under_torch_jit_load(tmp_path):
    """The test payload is live: torch.jit.load creates the marker (so the tests below can fail)."""
    marker = tmp_path / "ran"
    evil = evil_torchscript(tmp_path / "evil.pt", marker)
    torch.jit.load(str(evil))
    assert marker.exists()


def test_torchscript_weights_are_read_without_running_code(tmp_path):
    marker = tmp_path / "ran"
    evil = evil_torchscript(tmp_path / "evil.pt", marker)
    info = read_generator_file(evil)
    assert info.container == "torchscript"
    ref = tiny_rrdb().state_dict()
    for k, v in ref.items():
        assert torch.equal(info.state[k], v)
    assert not marker.exists()


def test_exported_torchscript_loads_back_with_the_same_tensors(tmp_path):
    from archs.export import export_file

    net = tiny_rrdb(3)
    src = save_generator_file(tmp_path / "g.pth", net, TINY_G)
    out = export_file(src, "torchscript", tmp_path / "g.pt")
    back, info = build_generator(out)
    assert info.container == "torchscript" and info.generator["num_feat"] == 8
    for k, v in net.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)


def test_predict_cli_with_torchscript_weights_runs_no_code(tmp_path):
    marker = tmp_path / "ran"
    evil = evil_torchscript(tmp_path / "evil.pt", marker)
    write_png(tmp_path / "in" / "a.png", np.zeros((8, 8, 3), np.uint8))
    env = {**os.environ, "WANDB_MODE": "offline"}
    subprocess.run([sys.executable, "predict.py", "model=esrgan", f"weights={evil}", f"input={tmp_path / 'in'}",
                    f"output={tmp_path / 'out'}", "device=cpu", f"hydra.run.dir={tmp_path / 'h'}"], cwd=ROOT, env=env,
                   capture_output=True, text=True, timeout=300)
    assert not marker.exists()


def test_evaluate_export_and_app_pick_run_no_torchscript_code(tmp_path):
    from archs.export import export_file
    from evaluate import evaluate

    marker = tmp_path / "ran"
    evil = evil_torchscript(tmp_path / "evil.pt", marker)
    write_png(tmp_path / "val" / "v.png", np.zeros((16, 16, 3), np.uint8))
    cfg = compose_cfg(tmp_path, ["device=cpu", "model=esrgan", f"ckpt_path={evil}",
                                 f"data.test_dirs=[{tmp_path / 'val'}]"], config_name="eval")
    try:
        evaluate(cfg)
    except Exception:  # noqa: BLE001 - refusing is fine; running the payload is not
        pass
    assert not marker.exists()
    try:
        export_file(evil, "safetensors", tmp_path / "x.safetensors")
    except Exception:  # noqa: BLE001
        pass
    assert not marker.exists()
    # the app's automatic pick: the newest demo run's weights/net_g_gan.pth is a TorchScript zip
    from webui.models import ModelStore
    from omegaconf import OmegaConf

    run = tmp_path / "logs" / "demo" / "runs" / "r1" / "weights"
    run.mkdir(parents=True)
    os.replace(evil, run / "net_g_gan.pth")
    app_cfg = compose_cfg(tmp_path, [f"paths.log_dir={tmp_path / 'logs'}", "device=cpu"], config_name="app")
    store = ModelStore(app_cfg)
    try:
        store.sr()
    except Exception:  # noqa: BLE001
        pass
    assert not marker.exists()


# =====================================================================================================================
# Item 2: the torch hub cache (VGG19 perceptual, VGG16 SC-FEGAN, LPIPS backbone) is read with weights_only=True
# =====================================================================================================================
def _poison_hub(tmp_path, monkeypatch, url):
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    marker = tmp_path / "ran"
    torch.save({"features.0.weight": Payload(marker)}, hub / os.path.basename(url))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return hub / os.path.basename(url), marker


def test_hub_payload_really_runs_under_torchvisions_loader(tmp_path, monkeypatch):
    from torchvision import models

    enum = models.VGG19_Weights.IMAGENET1K_V1
    _, marker = _poison_hub(tmp_path, monkeypatch, enum.url)
    try:
        enum.get_state_dict(progress=False)
    except Exception:  # noqa: BLE001 - the payload has run by then
        pass
    assert marker.exists()


@pytest.mark.parametrize("arch", ["vgg19", "vgg16"])
def test_poisoned_hub_cache_vgg_is_refused_naming_the_file(tmp_path, monkeypatch, arch):
    from torchvision import models

    from archs.vgg_features import load_vgg_features_state

    enum = {"vgg19": models.VGG19_Weights, "vgg16": models.VGG16_Weights}[arch].IMAGENET1K_V1
    file, marker = _poison_hub(tmp_path, monkeypatch, enum.url)
    for weights in ("imagenet", "auto"):
        with pytest.raises(ValueError, match=os.path.basename(str(file))):
            load_vgg_features_state(arch, weights)
    assert not marker.exists()


def test_poisoned_hub_cache_lpips_backbone_is_refused(tmp_path, monkeypatch):
    from torchvision import models

    from metrics.lpips import NETS, load_backbone_features

    net_type = sorted(NETS)[0]
    enum = getattr(models, NETS[net_type][1]).IMAGENET1K_V1
    file, marker = _poison_hub(tmp_path, monkeypatch, enum.url)
    with pytest.raises(ValueError, match=os.path.basename(str(file))):
        load_backbone_features(net_type, "imagenet")
    assert not marker.exists()


def test_good_hub_cache_vgg_still_loads(tmp_path, monkeypatch):
    from torchvision import models

    from archs.vgg_features import load_vgg_features_state

    enum = models.VGG19_Weights.IMAGENET1K_V1
    hub = tmp_path / "th" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    vgg = models.vgg19()
    torch.save(vgg.state_dict(), hub / os.path.basename(enum.url))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    state = load_vgg_features_state("vgg19", "imagenet")
    assert torch.equal(state["0.weight"] if "0.weight" in state else state["features.0.weight"],
                       vgg.state_dict()["features.0.weight"])
