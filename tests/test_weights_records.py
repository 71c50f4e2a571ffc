"""What travels with a model (issue 8): the SC-FEGAN training noise in checkpoints, weights files and exports, used
by predict.py by default (a different explicit kind warns); a random perceptual VGG recorded, never silent.
Networks are tiny random generators built here."""

import json
import logging
import urllib.error
import warnings

import numpy as np
import pytest
import torch
from conftest import compose_cfg, write_png

from archs.scfegan_generator import SCFEGANGenerator
from inference.faces import edit_face, resolve_noise
from inference.images import Image, read_image
from inference.run import predict
from weights.export import export_file
from weights.io import read_generator_file, save_generator_weights

GEN_CFG = {
    "_target_": "archs.scfegan_generator.SCFEGANGenerator",
    "in_channels": 9,
    "out_channels": 3,
    "cnum": 4,
    "self_gated_deconv": True,
    "padding_mode": "tf_same",
}


def _net():
    torch.manual_seed(0)
    net = SCFEGANGenerator(cnum=4).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.3, 0.3)
    return net


def _face(tmp_path):
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    mask = np.zeros((128, 128), np.uint8)
    mask[30:100, 20:110] = 255
    return write_png(tmp_path / "face.png", face), write_png(tmp_path / "mask.png", mask), face, mask > 0


def _predict(tmp_path, weights, *extra):
    face_p, mask_p, _, _ = _face(tmp_path)
    out = tmp_path / f"out_{len(list(tmp_path.glob('out_*')))}.png"
    cfg = compose_cfg(
        tmp_path / "cfg",
        [
            "device=cpu",
            "model=scfegan",
            f"weights={weights}",
            f"input={face_p}",
            f"mask={mask_p}",
            f"output={out}",
            *extra,
        ],
        config_name="predict",
    )
    (path,) = predict(cfg)
    return read_image(path).pixels


def test_resolve_noise_rules():
    assert resolve_noise("auto", {"noise_type": "gaussian"}) == "gaussian"
    assert resolve_noise(None, {}) == "binary16"  # nothing recorded: the official demo's noise
    with pytest.warns(UserWarning, match="trained with noise_type='gaussian'"):
        assert resolve_noise("binary16", {"noise_type": "gaussian"}) == "binary16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_noise("zero", {}) == "zero"  # nothing recorded: no mismatch to warn about
        assert resolve_noise("gaussian", {"noise_type": "gaussian"}) == "gaussian"
    with pytest.raises(ValueError, match="noise must be auto or one of"):
        resolve_noise("uniform", {})
    with pytest.raises(ValueError, match="records noise_type='pink'"):
        resolve_noise("auto", {"noise_type": "pink"})


@pytest.mark.slow
def test_predict_uses_the_recorded_noise_and_warns_on_mismatch(tmp_path):
    net = _net()
    weights = tmp_path / "net_g_final.pth"
    save_generator_weights(weights, net, generator=GEN_CFG, meta={"noise_type": "gaussian", "input_size": 128})
    assert read_generator_file(weights).meta["noise_type"] == "gaussian"
    got = _predict(tmp_path, weights)  # noise=auto (the default)
    _, _, face, mask = _face(tmp_path)
    img = Image(face, 255.0, "face")
    assert np.array_equal(got, edit_face(net, img, mask, size=(128, 128), noise="gaussian"))
    assert not np.array_equal(got, edit_face(net, img, mask, size=(128, 128), noise="binary16"))
    with pytest.warns(UserWarning, match="trained with noise_type='gaussian'"):
        other = _predict(tmp_path, weights, "noise=binary16")
    assert np.array_equal(other, edit_face(net, img, mask, size=(128, 128), noise="binary16"))
    # weights that record nothing: binary16, as before
    plain = tmp_path / "plain.pth"
    save_generator_weights(plain, net, generator=GEN_CFG, meta={"input_size": 128})
    assert np.array_equal(_predict(tmp_path, plain), edit_face(net, img, mask, size=(128, 128), noise="binary16"))


@pytest.mark.parametrize("fmt", ["safetensors", "torchscript", "onnx"])
def test_exports_keep_the_noise_type_of_a_checkpoint(tmp_path, fmt):
    """A Lightning checkpoint's hyper_parameters.noise_type -> GeneratorFile.meta -> the export's metadata."""
    if fmt == "onnx":
        onnx = pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    net = _net()
    ckpt = tmp_path / "g.ckpt"
    torch.save(
        {
            "state_dict": {f"net_g.{k}": v for k, v in net.state_dict().items()},
            "hyper_parameters": {"generator": GEN_CFG, "noise_type": "binary16"},
        },
        ckpt,
    )
    assert read_generator_file(ckpt).meta == {"noise_type": "binary16"}
    ext = {"safetensors": ".safetensors", "torchscript": ".pt", "onnx": ".onnx"}[fmt]
    path = export_file(str(ckpt), fmt, str(tmp_path / f"g{ext}"), kind="scfegan", height=128, width=128)
    if fmt == "onnx":
        props = {p.key: p.value for p in onnx.load(path).metadata_props}
        assert json.loads(props["meta"])["noise_type"] == "binary16"
    else:
        assert read_generator_file(path).meta["noise_type"] == "binary16"


def test_auto_vgg_falling_back_to_random_is_recorded_and_warned(tmp_path, monkeypatch, caplog):
    import torchvision

    from archs.vgg_features import VGGFeatureExtractor
    from runtime.results import log_perceptual_backbones, perceptual_backbones

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(torchvision.models.VGG16_Weights, "get_state_dict", offline)
    with pytest.warns(UserWarning, match="falling back to a RANDOM vgg16"):
        vgg = VGGFeatureExtractor(["pool1"], arch="vgg16", weights="auto")
    assert vgg.weights_info == {"arch": "vgg16", "requested": "auto", "weights": "random", "pretrained": False}
    holder = torch.nn.Module()
    holder.cri = torch.nn.Module()
    holder.cri.vgg = vgg
    found = perceptual_backbones(holder)
    assert found == {"cri.vgg": vgg.weights_info}
    with caplog.at_level(logging.INFO, logger="train"):
        log_perceptual_backbones(found)
    assert any(
        r.levelno == logging.WARNING and "RANDOM weights (requested 'auto')" in r.getMessage() for r in caplog.records
    )
    # a local weights file is recorded as such, without a warning
    state = {f"features.{k}": v for k, v in torchvision.models.vgg16(weights=None).features.state_dict().items()}
    torch.save(state, tmp_path / "vgg16.pth")
    local = VGGFeatureExtractor(["pool1"], arch="vgg16", weights=str(tmp_path / "vgg16.pth"))
    assert local.weights_info["pretrained"] and local.weights_info["weights"] == str(tmp_path / "vgg16.pth")
