"""Export to ONNX (run in onnxruntime, dynamic batch/height/width), TorchScript and safetensors, and reading
the exports back as weights."""

import json

import numpy as np
import pytest
import torch
from conftest import compose_cfg

from archs.rrdbnet import RRDBNet
from archs.scfegan_generator import SCFEGANGenerator
from inference.run import predict
from scripts.export import main as export_main
from weights.export import export_file, export_generator, export_ready
from weights.io import build_generator, save_generator_file
from weights.layouts import rrdbnet_config, scfegan_config

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def tiny_rrdbnet():
    torch.manual_seed(0)
    net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


def tiny_scfegan():
    torch.manual_seed(0)
    net = SCFEGANGenerator(cnum=4).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.2, 0.2)
    return net


CASES = {
    "rrdbnet": (tiny_rrdbnet, [(1, 3, 16, 20), (2, 3, 24, 12)]),
    "scfegan": (tiny_scfegan, [(1, 9, 128, 128), (2, 9, 256, 128)]),
}


def _inputs(shapes, scf):
    g = torch.Generator().manual_seed(1)
    return [torch.rand(*s, generator=g) * (2 if scf else 1) - (1 if scf else 0) for s in shapes]


@pytest.mark.parametrize("name", CASES)
def test_onnx_matches_pytorch_with_dynamic_axes(tmp_path, name):
    make, shapes = CASES[name]
    net = make()
    cfg = rrdbnet_config(net.state_dict()) if name == "rrdbnet" else scfegan_config(net.state_dict())
    path = export_generator(net, "onnx", tmp_path / "g.onnx", cfg, {"bgr": name == "scfegan"})
    model = onnx.load(path)
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["generator"]) == cfg and json.loads(props["meta"])["bgr"] == (name == "scfegan")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    for x in _inputs(shapes, name == "scfegan"):  # the traced size and another one, batch 2
        got = sess.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            ref = net(x).numpy()
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", CASES)
def test_torchscript_and_safetensors_round_trip(tmp_path, name):
    make, shapes = CASES[name]
    net = make()
    cfg = rrdbnet_config(net.state_dict()) if name == "rrdbnet" else scfegan_config(net.state_dict())
    ts = export_generator(net, "torchscript", tmp_path / "g.pt", cfg, {"bgr": True})
    st = export_generator(net, "safetensors", tmp_path / "g.safetensors", cfg, {"bgr": True})
    scripted = torch.jit.load(ts)
    for path in (ts, st):  # both read back as weights, with architecture and metadata
        built, info = build_generator(path)
        assert info.generator == cfg and info.meta["bgr"] is True
        for x in _inputs(shapes, name == "scfegan"):
            with torch.no_grad():
                assert torch.equal(built(x), net(x))
    for x in _inputs(shapes, name == "scfegan"):
        with torch.no_grad():
            assert (scripted(x) - net(x)).abs().max().item() < 1e-6


def test_export_ready_copy_computes_the_same():
    net = tiny_scfegan()
    ready = export_ready(net)
    x = _inputs([(1, 9, 128, 256)], True)[0]
    with torch.no_grad():
        assert torch.equal(ready(x), net(x))
    assert all(not p.requires_grad for p in ready.parameters())
    assert any(p.requires_grad for p in net.parameters())  # the original is untouched


def test_export_commands(tmp_path):
    net = tiny_rrdbnet()
    save_generator_file(tmp_path / "w.pth", net, None, None)
    # python predict.py model=esrgan weights=... export=onnx export_path=...
    cfg = compose_cfg(
        tmp_path,
        ["model=esrgan", f"weights={tmp_path / 'w.pth'}", "export=onnx", f"export_path={tmp_path / 'p.onnx'}"],
        config_name="predict",
    )
    (path,) = predict(cfg)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], net(x).numpy(), atol=1e-4, rtol=0)
    # python -m scripts.export ...
    out = export_main(["--weights", str(tmp_path / "w.pth"), "--format", "safetensors"])
    assert out == str(tmp_path / "w.safetensors")
    built, info = build_generator(out)
    assert info.generator["num_block"] == 1
    with pytest.raises(ValueError, match="format must be one of"):
        export_file(tmp_path / "w.pth", "tflite")
    with pytest.raises(ValueError, match="is the weights file itself"):
        export_file(tmp_path / "w.safetensors", "safetensors")
