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
from weights.io import build_generator, read_generator_file, save_generator_file

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
    torch.jit.save(
        torch.jit.script(_EvilGenerator(str(marker))),
        str(path),
        _extra_files={
            "generator_meta.json": '{"generator": ' + str(TINY_G).replace("'", '"').replace("True", "true") + "}"
        },
    )
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
    from weights.export import export_file

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
    subprocess.run(
        [
            sys.executable,
            "predict.py",
            "model=esrgan",
            f"weights={evil}",
            f"input={tmp_path / 'in'}",
            f"output={tmp_path / 'out'}",
            "device=cpu",
            f"hydra.run.dir={tmp_path / 'h'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert not marker.exists()


def test_evaluate_export_and_app_pick_run_no_torchscript_code(tmp_path):
    from evaluation.run import evaluate
    from weights.export import export_file

    marker = tmp_path / "ran"
    evil = evil_torchscript(tmp_path / "evil.pt", marker)
    write_png(tmp_path / "val" / "v.png", np.zeros((16, 16, 3), np.uint8))
    cfg = compose_cfg(
        tmp_path,
        ["device=cpu", "model=esrgan", f"ckpt_path={evil}", f"data.test_dirs=[{tmp_path / 'val'}]"],
        config_name="eval",
    )
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
    assert torch.equal(
        state["0.weight"] if "0.weight" in state else state["features.0.weight"], vgg.state_dict()["features.0.weight"]
    )


# =====================================================================================================================
# Item 4: every command that writes applies predict.py's rules (never an input; an existing output needs overwrite)
# =====================================================================================================================
def _two_generators(tmp_path):
    a = save_generator_file(tmp_path / "A.pth", tiny_rrdb(0), TINY_G)
    b = save_generator_file(tmp_path / "B.pth", tiny_rrdb(1), TINY_G)
    return Path(a), Path(b)


def test_interpolate_never_writes_over_an_input(tmp_path):
    from scripts.interpolate import main

    a, b = _two_generators(tmp_path)
    before = a.read_bytes(), b.read_bytes()
    for out in (a, b):
        for extra in ([], ["--overwrite"]):
            with pytest.raises(ValueError, match=f"{out.name}.*input"):
                main([str(a), str(b), "--alpha", "0.5", "--out", str(out), *extra])
    os.link(a, tmp_path / "hard.pth")  # a hard link to an input is the input
    with pytest.raises(ValueError, match="hard.pth"):
        main([str(a), str(b), "--alpha", "0.5", "--out", str(tmp_path / "hard.pth"), "--overwrite"])
    assert (a.read_bytes(), b.read_bytes()) == before


def test_interpolate_existing_output_needs_overwrite(tmp_path):
    from scripts.interpolate import main

    a, b = _two_generators(tmp_path)
    out = tmp_path / "C.pth"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="C.pth.*--overwrite"):
        main([str(a), str(b), "--alpha", "0.5", "--out", str(out)])
    assert out.read_bytes() == b"keep me"
    main([str(a), str(b), "--alpha", "0.5", "--out", str(out), "--overwrite"])
    assert out.read_bytes() != b"keep me"
    with pytest.raises(IsADirectoryError, match="directory"):
        main([str(a), str(b), "--alpha", "0.5", "--out", str(tmp_path)])


def test_export_tool_and_predict_export_existing_output_need_overwrite(tmp_path):
    from inference.run import predict
    from scripts.export import main

    a, _ = _two_generators(tmp_path)
    out = tmp_path / "G.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="G.safetensors.*--overwrite"):
        main(["--weights", str(a), "--format", "safetensors", "--out", str(out)])
    cfg = compose_cfg(
        tmp_path,
        ["device=cpu", "model=esrgan", f"weights={a}", "export=safetensors", f"export_path={out}"],
        config_name="predict",
    )
    with pytest.raises(FileExistsError, match="G.safetensors.*overwrite=true"):
        predict(cfg)
    assert out.read_bytes() == b"keep me"
    main(["--weights", str(a), "--format", "safetensors", "--out", str(out), "--overwrite"])
    assert build_generator(out)[1].container == "safetensors"


def test_export_onto_a_hard_link_of_its_weights_is_refused(tmp_path):
    from scripts.export import main

    a, _ = _two_generators(tmp_path)
    os.link(a, tmp_path / "link.pt")
    before = a.read_bytes()
    with pytest.raises(ValueError, match="link.pt.*input"):
        main(["--weights", str(a), "--format", "torchscript", "--out", str(tmp_path / "link.pt"), "--overwrite"])
    assert a.read_bytes() == before


def test_evaluate_metrics_file_never_an_input_and_existing_needs_overwrite(tmp_path):
    from evaluation.run import evaluate

    a, _ = _two_generators(tmp_path)
    write_png(tmp_path / "val" / "v.png", np.zeros((16, 16, 3), np.uint8))
    base = ["device=cpu", "model=esrgan", f"ckpt_path={a}", f"data.test_dirs=[{tmp_path / 'val'}]"]
    before = a.read_bytes()
    with pytest.raises(ValueError, match="A.pth.*input"):
        evaluate(compose_cfg(tmp_path, [*base, f"metrics_file={a}", "overwrite=true"], config_name="eval"))
    assert a.read_bytes() == before
    out = tmp_path / "m.json"
    out.write_text("{}")
    with pytest.raises(FileExistsError, match="m.json.*overwrite=true"):
        evaluate(compose_cfg(tmp_path, [*base, f"metrics_file={out}"], config_name="eval"))
    assert out.read_text() == "{}"


def test_scfegan_convert_out_existing_needs_overwrite(tmp_path):
    from scripts.scfegan_convert import main

    out = tmp_path / "G.pth"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="G.pth"):
        main(["--tf-ckpt", str(tmp_path / "missing.ckpt"), "--out", str(out)])
    assert out.read_bytes() == b"keep me"


# =====================================================================================================================
# Item 6: non-finite weights are refused, naming the file and the tensor
# =====================================================================================================================
def _nan_weights(tmp_path, name="nan.pth"):
    """A diverged run's weights, written directly (this project's writers refuse them)."""
    import json

    net = tiny_rrdb()
    with torch.no_grad():
        net.conv_body.weight[0, 0, 0, 0] = float("nan")
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    path = tmp_path / name
    if name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(sd, str(path), metadata={"generator": json.dumps(TINY_G), "meta": "{}"})
    else:
        torch.save({"params": sd, "params_ema": sd, "generator": TINY_G}, path)
    return path


@pytest.mark.parametrize("name", ["nan.pth", "nan.safetensors"])
def test_predict_refuses_non_finite_weights_naming_file_and_tensor(tmp_path, name):
    from inference.run import predict

    w = _nan_weights(tmp_path, name)
    write_png(tmp_path / "in" / "a.png", np.zeros((8, 8, 3), np.uint8))
    cfg = compose_cfg(
        tmp_path,
        ["device=cpu", "model=esrgan", f"weights={w}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}"],
        config_name="predict",
    )
    with pytest.raises(ValueError, match=rf"{name}.*conv_body\.weight.*non-finite"):
        predict(cfg)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_interpolate_refuses_non_finite_weights(tmp_path):
    from scripts.interpolate import main

    a, _ = _two_generators(tmp_path)
    w = _nan_weights(tmp_path)
    with pytest.raises(ValueError, match=r"nan\.pth.*conv_body\.weight"):
        main([str(a), str(w), "--alpha", "0.5", "--out", str(tmp_path / "C.pth")])
    assert not (tmp_path / "C.pth").exists()


# =====================================================================================================================
# Items 3 and 5: a run folder belongs to one run; non-finite training stops and saves nothing non-finite
# =====================================================================================================================
def _sr_data(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    for i in range(3):
        write_png(folder / f"{i}.png", rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    return folder


def _train_cfg(run_dir, data, *extra):
    from conftest import TINY_ESRGAN

    return compose_cfg(
        run_dir,
        [
            *TINY_ESRGAN,
            f"data.train_dirs=[{data}]",
            f"data.val_dirs=[{data}]",
            "data.dataset_enlarge_ratio=2",
            "model.psnr.iters=2",
            "model.gan.iters=2",
            "trainer.val_check_interval=2",
            *extra,
        ],
    )


def test_fresh_run_in_a_used_run_folder_is_refused_and_overwrite_replaces(tmp_path):
    from runtime.training import train

    data = _sr_data(tmp_path / "data")
    run = tmp_path / "run"
    first = train(_train_cfg(run, data))
    last = Path(first["last_model_path"])
    psnr = run / "weights" / "net_g_psnr.pth"
    before = last.read_bytes(), psnr.read_bytes()
    with pytest.raises(FileExistsError, match=r"run.*checkpoints/last\.ckpt.*weights/net_g_psnr\.pth.*overwrite=true"):
        train(_train_cfg(run, data, "seed=7"))
    assert (last.read_bytes(), psnr.read_bytes()) == before
    second = train(_train_cfg(run, data, "seed=7", "overwrite=true"))
    assert Path(second["last_model_path"]).name == "last.ckpt"
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert not any("-v1" in n for n in names), names
    assert last.read_bytes() != before[0]


def test_resuming_a_used_folder_is_allowed(tmp_path):
    from runtime.training import train

    data = _sr_data(tmp_path / "data")
    run = tmp_path / "run"
    first = train(_train_cfg(run, data))
    again = train(_train_cfg(run, data, "model.gan.iters=4", f"ckpt_path={first['last_model_path']}"))
    assert again["iteration"] == 6
    assert not any("-v1" in p.name for p in (run / "checkpoints").iterdir())


def _all_finite(path: Path) -> bool:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    sd = obj.get("state_dict") or obj.get("params") or {}
    return all(torch.isfinite(v).all() for v in sd.values() if torch.is_tensor(v) and v.is_floating_point())


def test_non_finite_training_stops_naming_iteration_and_loss_and_saves_nothing_non_finite(tmp_path):
    import json

    from lightning_modules.base import NonFiniteTrainingError
    from runtime.training import train

    data = _sr_data(tmp_path / "data")
    run = tmp_path / "run"
    with pytest.raises(NonFiniteTrainingError, match=r"(loss l_pix is NaN/Inf at iteration \d+|weight .* iteration)"):
        train(_train_cfg(run, data, "model.psnr.lr=1e30", "model.psnr.iters=6", "trainer.val_check_interval=3"))
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "non_finite" and "iteration" in result["error"]
    for f in list(run.rglob("*.ckpt")) + list(run.rglob("*.pth")):
        assert _all_finite(f), f


def test_non_finite_weights_are_never_written_to_weights_files(tmp_path):
    from weights.io import save_generator_weights

    net = tiny_rrdb()
    with torch.no_grad():
        net.conv_last.bias[0] = float("inf")
    with pytest.raises(ValueError, match=r"conv_last\.bias"):
        save_generator_weights(tmp_path / "w.pth", net)
    assert not (tmp_path / "w.pth").exists()


# =====================================================================================================================
# Items 7 and 8: malformed metadata names the file and key; sizes from files are checked before allocating
# =====================================================================================================================
def _safetensors_with_header(path: Path, header: dict) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny_rrdb().state_dict().items()}, str(path), metadata=header)
    return path


@pytest.mark.parametrize(
    "header, match",
    [
        ({"meta": "[1, 2]"}, r"'meta' must be a JSON object"),
        ({"meta": "{not json"}, r"'meta' is not valid JSON"),
        ({"generator": '["archs.rrdbnet.RRDBNet"]'}, r"'generator' must be a JSON object"),
    ],
)
def test_malformed_safetensors_metadata_names_file_and_key(tmp_path, header, match):
    path = _safetensors_with_header(tmp_path / "bad.safetensors", header)
    with pytest.raises(ValueError, match=rf"bad\.safetensors.*{match}"):
        build_generator(path)


def test_malformed_torchscript_meta_names_the_file(tmp_path):
    net = tiny_rrdb()
    path = tmp_path / "g.pt"
    torch.jit.save(torch.jit.trace(net, torch.rand(1, 3, 8, 8)), str(path), _extra_files={"generator_meta.json": "[1]"})
    with pytest.raises(ValueError, match=r"g\.pt.*generator_meta\.json.*JSON object"):
        build_generator(path)


def test_non_tensor_values_and_flat_conv_weights_name_the_file(tmp_path):
    sd = dict(tiny_rrdb().state_dict())
    bad = dict(sd, **{"conv_body.weight": "a string"})
    torch.save({"params_ema": bad}, tmp_path / "str.pth")
    with pytest.raises(ValueError, match=r"str\.pth.*conv_body\.weight.*not a tensor"):
        build_generator(tmp_path / "str.pth")
    flat = dict(sd, **{"conv_first.weight": torch.zeros(8)})
    torch.save({"params_ema": flat}, tmp_path / "flat.pth")
    with pytest.raises(ValueError, match=r"flat\.pth.*conv_first\.weight.*shape"):
        build_generator(tmp_path / "flat.pth")


@pytest.mark.parametrize(
    "field, value", [("num_feat", 300000), ("num_block", 10**7), ("num_feat", -8), ("num_grow_ch", 1 << 20)]
)
def test_recorded_sizes_are_checked_against_the_tensors_before_building(tmp_path, monkeypatch, field, value):
    import weights.io as wio

    path = save_generator_file(tmp_path / "big.pth", tiny_rrdb(), dict(TINY_G, **{field: value}))
    built = []
    monkeypatch.setattr(
        wio, "make_generator", lambda *a, **k: built.append(a) or (_ for _ in ()).throw(AssertionError("built"))
    )
    with pytest.raises(ValueError, match=rf"big\.pth.*{field}={value}.*tensors"):
        build_generator(path)
    assert not built


def test_app_working_size_from_a_stray_run_config_or_meta_is_bounded(tmp_path):
    from inference.faces import working_size

    with pytest.raises(ValueError, match=r"larger than 2048"):
        working_size("auto", {"input_size": 65536})
    with pytest.raises(ValueError, match=r"config\.yaml.*larger than 2048"):
        working_size(65536, {}, "the run's .hydra/config.yaml")
    with pytest.raises(ValueError, match=r"input_size"):
        working_size("auto", {"input_size": "huge"})
    assert working_size(4096, {}) == (4096, 4096)  # the user's own choice is not bounded


# =====================================================================================================================
# Item 9: evaluate's pixel limit; the app / API refuse tiny tiles
# =====================================================================================================================
def test_evaluate_refuses_a_huge_image_from_its_header(tmp_path, monkeypatch):
    import cv2

    from evaluation.run import evaluate

    a = save_generator_file(tmp_path / "A.pth", tiny_rrdb(), TINY_G)
    (tmp_path / "val").mkdir()
    cv2.imwrite(str(tmp_path / "val" / "big.png"), np.zeros((4200, 4200, 3), np.uint8))  # compresses to a few KB
    cfg = compose_cfg(
        tmp_path,
        ["device=cpu", "model=esrgan", f"ckpt_path={a}", f"data.test_dirs=[{tmp_path / 'val'}]"],
        config_name="eval",
    )
    with pytest.raises(ValueError, match=r"big\.png.*4200x4200.*max_pixels"):
        evaluate(cfg)


@pytest.mark.parametrize("tile", [2, 4])
def test_upscale_api_refuses_tiny_tiles(tmp_path, tile):

    from webui.handlers import InputError, upscale_file
    from webui.models import ModelStore

    g = save_generator_file(tmp_path / "g.pth", tiny_rrdb(), TINY_G)
    write_png(tmp_path / "a.png", np.zeros((96, 96, 3), np.uint8))
    cfg = compose_cfg(tmp_path, ["device=cpu", f"sr_weights={g}"], config_name="app")
    store = ModelStore(cfg)
    with pytest.raises(InputError, match=rf"tile={tile}.*at least 8"):
        upscale_file(store, tmp_path / "a.png", 1.0, tile, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_predict_refuses_tiny_tiles(tmp_path):
    from inference.run import predict

    g = save_generator_file(tmp_path / "g.pth", tiny_rrdb(), TINY_G)
    write_png(tmp_path / "in" / "a.png", np.zeros((96, 96, 3), np.uint8))
    cfg = compose_cfg(
        tmp_path,
        [
            "device=cpu",
            "model=esrgan",
            f"weights={g}",
            f"input={tmp_path / 'in'}",
            f"output={tmp_path / 'out'}",
            "tile=2",
        ],
        config_name="predict",
    )
    with pytest.raises(ValueError, match=r"tile=2.*2304 tiles"):
        predict(cfg)


# =====================================================================================================================
# Item 10: minor ones
# =====================================================================================================================
@pytest.mark.parametrize(
    "override, key",
    [
        ("model.psnr.lr=nan", "model.psnr.lr"),
        ("model.gan.lr_d=-1e-4", "model.gan.lr_d"),
        ("model.gan.lr_g=inf", "model.gan.lr_g"),
    ],
)
def test_bad_learning_rates_name_the_key_before_anything_runs(tmp_path, override, key):
    from runtime.training import train

    data = _sr_data(tmp_path / "data")
    with pytest.raises(ValueError, match=rf"{key}=.*learning rate"):
        train(_train_cfg(tmp_path / "run", data, override))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_tampered_resume_fields_are_refused(tmp_path):
    from runtime.training import train

    data = _sr_data(tmp_path / "data")
    first = train(_train_cfg(tmp_path / "a", data))
    ckpt = torch.load(first["last_model_path"], map_location="cpu", weights_only=True)
    for field, value, match in (
        ("iteration", -100, r"iteration=-100"),
        ("rng_states", {"torch": torch.zeros(3, dtype=torch.uint8)}, r"rng_states"),
    ):
        bad = dict(ckpt, **{field: value})
        path = tmp_path / f"bad_{field}.ckpt"
        torch.save(bad, path)
        with pytest.raises(ValueError, match=match):
            train(_train_cfg(tmp_path / f"b_{field}", data, "model.gan.iters=4", f"ckpt_path={path}"))


def test_float32_tiff_is_accepted_as_the_readme_lists(tmp_path):
    import cv2

    from inference.images import read_image
    from inference.run import predict

    g = save_generator_file(tmp_path / "g.pth", tiny_rrdb(), TINY_G)
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "f.tif"), np.random.default_rng(0).random((12, 10, 3)).astype(np.float32))
    assert read_image(tmp_path / "in" / "f.tif").size == (12, 10)
    cfg = compose_cfg(
        tmp_path,
        ["device=cpu", "model=esrgan", f"weights={g}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}"],
        config_name="predict",
    )
    written = predict(cfg)
    assert len(written) == 1 and read_image(written[0]).size == (48, 40)


def test_a_directory_given_as_mask_is_reported_as_a_directory(tmp_path):
    from inference.images import read_mask

    (tmp_path / "masks").mkdir()
    with pytest.raises(IsADirectoryError, match=r"mask.*masks.*is a directory"):
        read_mask(str(tmp_path / "masks"), (8, 8))


def test_disk_full_during_a_checkpoint_write_says_no_space_and_names_the_file(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from runtime.checkpoint_io import atomic_torch_save

    target = tmp_path / "last.ckpt"
    target.write_bytes(b"previous")

    def full(obj, fh):  # what torch's zip writer raises when the disk fills up
        fh.write(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 625408 vs 625300")

    monkeypatch.setattr(torch, "save", full)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 30, 10 << 30, 4096))
    with pytest.raises(OSError, match=r"no space left.*last\.ckpt"):
        atomic_torch_save({"a": 1}, target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


# =====================================================================================================================
# Own hostile pass (issue 16, beyond the list): crafted archives, links, odd file kinds, every writer and reader
# =====================================================================================================================
def _script_zip(path: Path, data_pkl: bytes, extra: dict | None = None) -> Path:
    """A zip laid out like a TorchScript archive (code/ entry, constants.pkl) with the given data.pkl."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/constants.pkl", pickle.dumps((), protocol=2))
        zf.writestr("archive/code/__torch__.py", "raise SystemExit('code ran')\n")
        for name, data in (extra or {}).items():
            zf.writestr(f"archive/{name}", data)
    return path


def test_torchscript_like_zip_whose_data_pkl_names_a_python_callable_is_refused(tmp_path):
    marker = tmp_path / "ran"
    evil = _script_zip(tmp_path / "evil.pt", pickle.dumps(Payload(marker), protocol=2))
    with pytest.raises(ValueError, match=r"evil\.pt.*(io|builtins)\.open is not allowed"):
        read_generator_file(evil)
    assert not marker.exists()


def test_torchscript_storage_record_missing_or_short_is_refused(tmp_path):
    class Rec:
        def __init__(self, pid):
            self.pid = pid

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return obj.pid if isinstance(obj, Rec) else None

    import io

    for name, pid, data in (
        ("missing.pt", ("storage", torch.float32, "0", "cpu", 4), None),
        ("short.pt", ("storage", torch.float32, "0", "cpu", 10**12), b"\0" * 16),
    ):
        buf = io.BytesIO()

        class Stor:  # pickled as torch.FloatStorage by name
            pass

        P(buf, protocol=2).dump({"w": Rec(("storage", "FLOAT", pid[2], "cpu", pid[4]))})
        raw = buf.getvalue().replace(b"X\x05\x00\x00\x00FLOAT", b"ctorch\nFloatStorage\n")
        path = _script_zip(tmp_path / name, raw, {"data/0": data} if data is not None else None)
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            read_generator_file(path)


def test_interpolate_and_evaluate_interp_with_torchscript_payload_run_no_code(tmp_path):
    from evaluation.run import evaluate
    from scripts.interpolate import main

    marker = tmp_path / "ran"
    evil = evil_torchscript(tmp_path / "evil.pt", marker)
    a, _ = _two_generators(tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - refused one way or another; the point is the marker
        main([str(a), str(evil), "--alpha", "0.5", "--out", str(tmp_path / "C.pth")])
    write_png(tmp_path / "val" / "v.png", np.zeros((16, 16, 3), np.uint8))
    cfg = compose_cfg(
        tmp_path,
        [
            "device=cpu",
            "model=esrgan",
            f"interp.psnr_weights={a}",
            f"interp.gan_weights={evil}",
            "interp.alphas=[0.5]",
            f"data.test_dirs=[{tmp_path / 'val'}]",
        ],
        config_name="eval",
    )
    try:
        evaluate(cfg)
    except Exception:  # noqa: BLE001
        pass
    assert not marker.exists()


@pytest.mark.parametrize(
    "content", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{", (1 << 40).to_bytes(8, "little") + b"{}"]
)
def test_damaged_safetensors_names_the_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.safetensors"):
        build_generator(path)


def test_weights_path_that_is_a_directory_or_a_fifo_is_named_for_what_it_is(tmp_path):
    (tmp_path / "w.pth").mkdir()
    with pytest.raises(ValueError, match=r"w\.pth.*is a directory"):
        build_generator(tmp_path / "w.pth")
    os.mkfifo(tmp_path / "f.pth")
    with pytest.raises(ValueError, match=r"f\.pth.*not a regular file"):
        build_generator(tmp_path / "f.pth")


def test_export_of_non_finite_weights_writes_nothing(tmp_path):
    from scripts.export import main

    w = _nan_weights(tmp_path)
    with pytest.raises(ValueError, match=r"conv_body\.weight"):
        main(["--weights", str(w), "--format", "safetensors", "--out", str(tmp_path / "x.safetensors")])
    assert not (tmp_path / "x.safetensors").exists()


def test_save_generator_file_refuses_non_finite(tmp_path):
    net = tiny_rrdb()
    with torch.no_grad():
        net.conv_first.weight[0, 0, 0, 0] = float("-inf")
    for name in ("g.pth", "g.safetensors"):
        with pytest.raises(ValueError, match=r"conv_first\.weight"):
            save_generator_file(tmp_path / name, net, TINY_G)
        assert not (tmp_path / name).exists()


def test_app_sr_with_non_finite_weights_is_an_error_naming_the_file(tmp_path):
    from webui.models import ModelStore

    w = _nan_weights(tmp_path)
    store = ModelStore(compose_cfg(tmp_path, ["device=cpu", f"sr_weights={w}"], config_name="app"))
    with pytest.raises(ValueError, match=r"nan\.pth.*non-finite"):
        store.sr()


def test_symlink_or_dangling_link_outputs(tmp_path):
    from scripts.export import main as export_main
    from weights.io import check_output_file

    a, _ = _two_generators(tmp_path)
    os.symlink(a, tmp_path / "alias.safetensors")
    with pytest.raises(ValueError, match="alias.safetensors.*input"):
        export_main(
            [
                "--weights",
                str(a),
                "--format",
                "safetensors",
                "--out",
                str(tmp_path / "alias.safetensors"),
                "--overwrite",
            ]
        )
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.json")
    with pytest.raises(FileExistsError, match="dangling.json"):
        check_output_file(tmp_path / "dangling.json")


def test_metrics_file_that_is_a_directory_is_refused_before_work(tmp_path):
    from evaluation.run import evaluate

    a, _ = _two_generators(tmp_path)
    (tmp_path / "m").mkdir()
    cfg = compose_cfg(
        tmp_path,
        [
            "device=cpu",
            "model=esrgan",
            f"ckpt_path={a}",
            f"metrics_file={tmp_path / 'm'}",
            f"data.test_dirs=[{tmp_path / 'nowhere'}]",
        ],
        config_name="eval",
    )
    with pytest.raises(IsADirectoryError, match=r"metrics_file.*directory"):
        evaluate(cfg)


def test_render_synthesis_stats_out_existing_needs_overwrite(tmp_path):
    from scripts.render_synthesis import render

    stats = tmp_path / "s.json"
    stats.write_text("keep")
    cfg = compose_cfg(
        tmp_path, ["data=faces_demo", f"out={tmp_path / 'g.png'}", f"stats_out={stats}"], config_name="render_synthesis"
    )
    with pytest.raises(FileExistsError, match=r"s\.json"):
        render(cfg)
    assert stats.read_text() == "keep" and not (tmp_path / "g.png").exists()


def test_fresh_run_in_a_used_folder_resuming_another_folder_is_refused(tmp_path):
    from runtime.training import train

    data = _sr_data(tmp_path / "data")
    a = train(_train_cfg(tmp_path / "a", data))
    train(_train_cfg(tmp_path / "b", data))
    before = (tmp_path / "b" / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(FileExistsError, match=r"b.*another run"):
        train(_train_cfg(tmp_path / "b", data, "model.gan.iters=4", f"ckpt_path={a['last_model_path']}"))
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").read_bytes() == before


def test_hub_cache_damaged_file_with_weights_auto_is_an_error_not_a_silent_random_vgg(tmp_path, monkeypatch):
    from torchvision import models

    from archs.vgg_features import load_vgg_features_state

    enum = models.VGG19_Weights.IMAGENET1K_V1
    hub = tmp_path / "th" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / os.path.basename(enum.url)).write_bytes(b"PK\x03\x04 truncated")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(ValueError, match=os.path.basename(enum.url)):
        load_vgg_features_state("vgg19", "auto")


def test_local_lpips_and_hed_files_with_payloads_run_no_code(tmp_path):
    from metrics.lpips import NETS, load_backbone_features
    from weights.pretrained import read_layout_weights

    marker = tmp_path / "ran"
    f = tmp_path / "evil.pth"
    torch.save({"features.0.weight": Payload(marker)}, f)
    with pytest.raises(ValueError, match=r"evil\.pth"):
        load_backbone_features(sorted(NETS)[0], str(f))
    with pytest.raises(ValueError, match=r"evil\.pth"):
        read_layout_weights(f, "HED weights file", lambda: torch.nn.Conv2d(1, 1, 1), "test")
    assert not marker.exists()


@pytest.mark.parametrize("meta", [{"input_size": [65536, 128]}, {"input_size": -128}, {"input_size": [128]}])
def test_face_working_size_from_weights_meta_is_checked(meta):
    from inference.faces import working_size

    with pytest.raises(ValueError, match=r"input_size|larger than"):
        working_size("auto", meta)


def test_upscale_api_negative_and_huge_tiles(tmp_path):
    from webui.handlers import InputError, upscale_file
    from webui.models import ModelStore

    g = save_generator_file(tmp_path / "g.pth", tiny_rrdb(), TINY_G)
    write_png(tmp_path / "a.png", np.zeros((20, 24, 3), np.uint8))
    store = ModelStore(compose_cfg(tmp_path, ["device=cpu", f"sr_weights={g}"], config_name="app"))
    with pytest.raises(InputError, match="tile must be >= 0"):
        upscale_file(store, tmp_path / "a.png", 1.0, -4, tmp_path / "out")
    out, msg = upscale_file(store, tmp_path / "a.png", 1.0, 10**6, tmp_path / "out")  # larger than the image: whole
    assert os.path.isfile(out)


def test_params_ema_with_a_nested_dict_value_names_the_key(tmp_path):
    sd = dict(tiny_rrdb().state_dict())
    sd["conv_hr.weight"] = {"nested": torch.zeros(1)}
    torch.save({"params_ema": sd}, tmp_path / "n.pth")
    with pytest.raises(ValueError, match=r"n\.pth.*conv_hr\.weight"):
        build_generator(tmp_path / "n.pth")


def test_overwrite_true_in_an_empty_folder_deletes_nothing(tmp_path):
    from runtime.launch import check_run_folder

    (tmp_path / "run" / "samples").mkdir(parents=True)
    (tmp_path / "run" / "samples" / "keep.png").write_bytes(b"x")
    cfg = compose_cfg(tmp_path / "run", ["experiment=demo", "overwrite=true"])
    check_run_folder(cfg)
    assert (tmp_path / "run" / "samples" / "keep.png").exists()
