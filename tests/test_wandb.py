"""An offline wandb run of a tiny ESRGAN, read back from its files: config, metric keys against batches, a
non-black sample image, the per-image validation table, the best checkpoint artifact.

wandb 0.31 writes an offline run only into ``run-<id>.wandb`` (no config.yaml / wandb-summary.json until
``wandb sync``) and ships no Python reader for it, so :func:`read_wandb_run` parses the record log: a 7-byte
header (``:W&B``, magic 0xBEE1, version 0), 32 KiB blocks, records with 7-byte headers (crc32 u32, length u16,
type u8: 1 full, 2 first, 3 middle, 4 last; a block tail shorter than a header is zero padding), each payload a
protobuf ``Record`` from ``wandb.proto.wandb_internal_pb2``.  The format is internal: pinned to wandb 0.31.
"""

import glob
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY_ESRGAN, compose_cfg
from PIL import Image

WANDB_VERSION = "0.31"
HEADER = struct.Struct("<4sHB")
RECORD_HEADER = struct.Struct("<IHB")
BLOCK = 32 * 1024


def _raw_records(data: bytes):
    ident, magic, version = HEADER.unpack_from(data, 0)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a wandb record log (format changed?)"
    pos, parts = HEADER.size, b""
    while pos + RECORD_HEADER.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD_HEADER.size:  # block trailer
            pos += left
            continue
        _crc, length, kind = RECORD_HEADER.unpack_from(data, pos)
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        payload = data[pos + RECORD_HEADER.size : pos + RECORD_HEADER.size + length]
        pos += RECORD_HEADER.size + length
        if kind == 1:
            yield payload
        elif kind == 2:
            parts = payload
        elif kind == 3:
            parts += payload
        elif kind == 4:
            yield parts + payload
            parts = b""


def read_wandb_run(path) -> dict:
    """{"run": RunRecord, "config": {...}, "history": [{key: value}], "artifacts": [ArtifactRecord], ...}."""
    import wandb
    from wandb.proto import wandb_internal_pb2 as pb

    assert wandb.__version__.startswith(WANDB_VERSION), f"record-log parser written for wandb {WANDB_VERSION}"
    out = {"run": None, "config": {}, "history": [], "artifacts": [], "metrics": []}
    for raw in _raw_records(Path(path).read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
            for item in rec.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                key = item.key or "/".join(item.nested_key)
                out["config"][key] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append(
                {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            )
        elif kind == "artifact":
            out["artifacts"].append(rec.artifact)
        elif kind == "metric":
            out["metrics"].append(rec.metric)
    return out


@pytest.mark.slow
def test_offline_wandb_run_has_config_metrics_images_table_and_checkpoint(tmp_path, monkeypatch):
    import wandb

    from runtime.training import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    set5 = REPO / "data" / "demo" / "val" / "Set5"
    cfg = compose_cfg(
        tmp_path / "run",
        [
            *TINY_ESRGAN,
            "logger=wandb",
            "logger.wandb.log_model=true",
            f"data.val_dirs=[{set5}]",
            "model.psnr.iters=2",
            "model.gan.iters=2",
            "trainer.val_check_interval=2",
            "trainer.log_every_n_steps=1",
        ],
    )
    result = train(cfg)
    assert wandb.run is None  # finished: the next job gets its own run
    assert os.environ["WANDB_MODE"] == "offline"  # not rewritten by the logger (pytorch_lightning/loggers/wandb.py)

    run_dir = Path(glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*"))[0])
    run = read_wandb_run(next(run_dir.glob("run-*.wandb")))

    # The full resolved config, plus the global batch.
    config = run["config"]
    assert config["model"]["gan"]["gan_weight"] == 5e-3 and config["data"]["batch_size"] == 2
    assert config["trainer"]["val_check_interval"] == 2
    assert config["global_batch_size"] == 2 and config["world_size"] == 1
    # A random perceptual VGG is in the config, never silent (issue 8).
    assert config["perceptual_backbone"]["cri_perceptual.vgg"] == {
        "arch": "vgg19",
        "requested": "random",
        "weights": "random",
        "pretrained": False,
    }
    assert config["perceptual_backbone_random"] is True
    assert result["perceptual_backbone"]["cri_perceptual.vgg"]["weights"] == "random"

    # Metrics against batches: WandbLogger's x-axis trainer/global_step counts batches from 0 (iter - 1), not
    # Lightning's global_step (2 optimizer steps per GAN batch).
    keys = set().union(*run["history"])
    assert {
        "train/l_pix",
        "train/l_g_gan",
        "train/l_d_real",
        "iter",
        "trainer/global_step",
        "val/psnr_y",
        "val/Set5/psnr_y",
    } <= keys
    # Media are logged as nested items (samples/Set5/_type, .../path ...).
    assert {"samples/Set5/_type", "val/per_image/_type"} <= keys
    assert {h["samples/Set5/_type"] for h in run["history"] if "samples/Set5/_type" in h} == {"image-file"}
    train_rows = [h for h in run["history"] if "train/l_pix" in h]
    assert [h["iter"] for h in train_rows] == [1, 2, 3, 4]
    assert all(h["trainer/global_step"] == h["iter"] - 1 for h in train_rows)
    assert [h["iter"] for h in run["history"] if "val/psnr_y" in h] == [2, 4]
    assert any(m.glob_name == "*" and m.step_metric == "trainer/global_step" for m in run["metrics"])

    # Sample grids: uint8 images that are not black.
    pngs = sorted((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert len(pngs) == 2
    img = np.asarray(Image.open(pngs[-1]).convert("RGB"))
    assert img.max() > 50 and img.std() > 5

    # The per-image validation table.
    tables = sorted((run_dir / "files" / "media" / "table").rglob("*.table.json"))
    assert tables
    table = json.loads(tables[-1].read_text())
    assert table["columns"][:3] == ["folder", "image", "psnr_y"]
    assert sorted(r[1] for r in table["data"]) == ["baby", "bird", "butterfly", "head", "woman"]
    psnr = np.mean([r[2] for r in table["data"]])
    assert psnr == pytest.approx(result["metrics"]["val/psnr_y"], rel=1e-6)  # logged metrics are float32

    # log_model=true: the best checkpoint as a model artifact.
    models = [a for a in run["artifacts"] if a.type == "model"]
    assert len(models) == 1 and "best" in models[0].aliases
    assert [e.path for e in models[0].manifest.contents] == ["best.ckpt"]
