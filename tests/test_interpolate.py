"""Network interpolation (weights/interpolate.py, scripts/interpolate.py): endpoints, mean, layout errors, the command."""

import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from conftest import REPO

from archs.rrdbnet import RRDBNet
from scripts.interpolate import main
from weights.interpolate import interpolate_state_dicts, load_and_interpolate, save_state_dict
from weights.io import load_generator_state


def _net_state(seed, **kw):
    torch.manual_seed(seed)
    args = dict(num_feat=8, num_block=1, num_grow_ch=4, scale=4) | kw
    return OrderedDict((k, v.clone()) for k, v in RRDBNet(**args).state_dict().items())


def test_alpha_0_and_1_are_the_endpoints_exactly_and_half_is_the_mean():
    a, b = _net_state(0), _net_state(1)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    zero, one, half = (interpolate_state_dicts(a, b, t) for t in (0.0, 1.0, 0.5))
    assert list(zero) == list(a) == list(one)
    for k in a:
        assert torch.equal(zero[k], a[k]), k
        assert torch.equal(one[k], b[k]), k
        assert torch.equal(half[k], (a[k] + b[k]) / 2), k
        assert half[k].dtype == a[k].dtype
    # The general formula, e.g. the README's alpha = 0.8.
    x = interpolate_state_dicts(a, b, 0.8)
    for k in a:
        torch.testing.assert_close(x[k], 0.2 * a[k] + 0.8 * b[k], rtol=0, atol=1e-7)
    # Results are copies: changing them leaves the inputs alone.
    zero["conv_first.weight"].add_(1)
    assert not torch.equal(zero["conv_first.weight"], a["conv_first.weight"])


def test_integer_entries_come_from_the_nearer_endpoint():
    a = {"w": torch.zeros(2), "n": torch.tensor(3)}
    b = {"w": torch.ones(2), "n": torch.tensor(9)}
    assert interpolate_state_dicts(a, b, 0.3)["n"] == 3
    assert interpolate_state_dicts(a, b, 0.7)["n"] == 9


def test_mismatched_layouts_name_the_keys(tmp_path):
    a = _net_state(0)
    wider = _net_state(1, num_feat=16)
    expected = r"shapes differ: body\.0\.rdb1\.conv1\.weight \(4, 8, 3, 3\) vs \(4, 16, 3, 3\)"
    with pytest.raises(ValueError, match=expected):
        interpolate_state_dicts(a, wider, 0.5)
    deeper = _net_state(1, num_block=2)
    pa, pb = tmp_path / "psnr.pth", tmp_path / "gan.pth"
    save_state_dict(str(pa), a)
    save_state_dict(str(pb), deeper)
    with pytest.raises(ValueError, match=r"keys only in .*gan\.pth: \['body\.1\.rdb1\.conv1\.bias'"):
        load_and_interpolate(str(pa), str(pb), 0.5)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        interpolate_state_dicts(a, a, 1.5)


def test_command_writes_a_basicsr_container(tmp_path):
    a, b = _net_state(0), _net_state(1)
    pa = tmp_path / "net_g_psnr.pth"
    torch.save({"params": a, "params_ema": a}, pa)
    # The GAN side as this project's Lightning checkpoint (the EMA generator is read).
    pb = tmp_path / "gan.ckpt"
    torch.save(
        {"state_dict": {**{f"net_g_ema.{k}": v for k, v in b.items()}, **{f"net_d.{k}": v for k, v in a.items()}}}, pb
    )
    out = tmp_path / "out" / "interp.pth"
    main([str(pa), str(pb), "--alpha", "0.8", "--out", str(out)])
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert set(saved) == {"params", "params_ema"}
    got = load_generator_state(out)
    for k in a:
        assert torch.equal(got[k], interpolate_state_dicts(a, b, 0.8)[k])
    # The same as a module command (tv_compat import, argument parsing, exit status).
    out2 = tmp_path / "interp1.pth"
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.interpolate", str(pa), str(pb), "--alpha", "1", "--out", str(out2)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert all(torch.equal(load_generator_state(out2)[k], b[k]) for k in b)
