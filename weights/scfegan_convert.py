"""Convert the official SC-FEGAN TensorFlow checkpoint into this project's generator (official model.py:29-86).

    python -m scripts.scfegan_convert --tf-ckpt PATH/SC-FEGAN.ckpt --out G.pth        # or G.safetensors
    python -m scripts.scfegan_convert --tf-ckpt variables.npz --out G.pth             # no TensorFlow needed

``--tf-ckpt`` is the checkpoint *prefix* (the released ``SC-FEGAN.ckpt.index`` and
``SC-FEGAN.ckpt.data-00000-of-00001`` pair; the TF ``checkpoint`` file is not needed).  Reading it needs
TensorFlow, an optional extra that is not in ``requirements.txt`` (``pip install tensorflow-cpu``); it is
imported only here.  Without TensorFlow, dump the variables elsewhere (``np.savez(f, **{name: array})``) and
pass the ``.npz``.

Mapping (TF scopes as model.py), for each gated layer ``<layer>`` of :class:`archs.scfegan_generator.SCFEGANGenerator`:

=================================  ==============================  ===========================
TF variable                        TF shape                        PyTorch
=================================  ==============================  ===========================
``generator/<layer>/kernel, bias``    [kh, kw, in, out], [out]     ``<layer>.conv.weight`` = permute(3, 2, 0, 1)
``generator/<layer>_g/kernel, bias``  same                         ``<layer>.gate.*``
``generator/deconvN/w``               [5, 5, out, in]              ``deconvN.deconv.weight`` [in, out, 5, 5] = permute(3, 2, 0, 1)
``generator/deconvN/biases1``         [out]                        ``deconvN.deconv.bias``
``generator/deconvN/biases2``         [out]                        dead in the official graph: skipped
=================================  ==============================  ===========================

No kernel flip: both frameworks define the transposed conv as the adjoint of cross-correlation.  The generator
is built with ``padding_mode="tf_same"`` (TF's asymmetric 'SAME' padding at stride 2) and
``self_gated_deconv=True`` (the official deconv gate), so it computes what the TF graph computes.

**Channel order.**  The released weights were trained on ``cv2.imread`` images: image and colour channels are
BGR, and so is the output.  The converted file records ``meta.bgr = True``; ``predict.py`` then flips RGB<->BGR
on the image and colour inputs and on the output (the weights are not permuted: colour channels reappear inside
the network, in layer 24's concatenation and layer 25's output).  The file also records the official input
size (512).  The official weights are CC BY-NC 4.0 (non-commercial use only).
"""

import os
import re
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import torch

from archs.scfegan_generator import SCFEGANGenerator
from weights.io import load_into, save_generator_file
from weights.layouts import scfegan_config

__all__ = [
    "GATED_LAYERS",
    "DECONV_LAYERS",
    "tf_to_torch",
    "torch_to_tf",
    "read_tf_checkpoint",
    "convert",
]

#: The 18 gated convolutions and 7 self-gated deconvolutions of the official graph (TF scope names).
GATED_LAYERS = (
    [f"gconv{i}_ds" for i in range(1, 8)]
    + [f"co_conv{i}_dlt" for i in range(1, 5)]
    + [f"gconv{i}" for i in range(8, 15)]
)
DECONV_LAYERS = [f"deconv{i}" for i in range(1, 8)]
OFFICIAL_INPUT_SIZE = 512  # demo.yaml INPUT_SIZE
TF_INSTALL_HINT = (
    "reading a TensorFlow checkpoint needs TensorFlow, an optional extra of this project: "
    "`pip install tensorflow-cpu` (any TF 2.x reads the TF 1.13 checkpoint), or dump the variables on a machine "
    "that has it (`np.savez('vars.npz', **{n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()})`) "
    "and pass the .npz"
)


def _mapping(prefix: str) -> list[tuple[str, str, str]]:
    """(torch key, TF variable name, kind) with kind 'kernel' / 'deconv' / 'bias'."""
    rows = []
    for layer in GATED_LAYERS:
        for branch, scope in (("conv", layer), ("gate", f"{layer}_g")):
            rows.append((f"{layer}.{branch}.weight", f"{prefix}{scope}/kernel", "kernel"))
            rows.append((f"{layer}.{branch}.bias", f"{prefix}{scope}/bias", "bias"))
    for layer in DECONV_LAYERS:
        rows.append((f"{layer}.deconv.weight", f"{prefix}{layer}/w", "deconv"))
        rows.append((f"{layer}.deconv.bias", f"{prefix}{layer}/biases1", "bias"))
    return rows


def _find_prefix(names) -> str:
    """The scope the generator variables live under (``generator/`` in the release)."""
    for name in names:
        m = re.match(r"^(.*?)gconv1_ds/kernel$", name)
        if m:
            return m[1]
    return "generator/"


def tf_to_torch(
    variables: Mapping[str, "np.ndarray | torch.Tensor"], prefix: str | None = None
) -> tuple["OrderedDict[str, torch.Tensor]", dict, list[str]]:
    """Official TF variables (name -> array) -> (PyTorch state dict, generator config, ignored names).

    Works on any mapping of arrays (a TF checkpoint reader's output, an ``.npz``, a dict built in a test).
    ``prefix`` defaults to the scope found in the names (``generator/``).  Raises ``ValueError`` naming the
    missing variables, or a variable whose shape does not fit.  Ignored: ``biases2`` (dead), optimiser
    slots and anything outside the generator.
    """
    prefix = _find_prefix(variables) if prefix is None else prefix
    rows = _mapping(prefix)
    missing = [tf for _, tf, _ in rows if tf not in variables]
    if missing:
        found = sorted(variables)
        raise ValueError(
            f"not an official SC-FEGAN generator checkpoint: {len(missing)} of {len(rows)} variables missing, "
            f"e.g. {missing[:6]}; expected names like {prefix}gconv1_ds/kernel, {prefix}gconv1_ds_g/bias, "
            f"{prefix}deconv1/w, {prefix}deconv1/biases1; found {len(found)} variables: {found[:8]}"
        )
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, tf_name, kind in rows:
        arr = torch.as_tensor(np.asarray(variables[tf_name], dtype=np.float32))
        if kind in ("kernel", "deconv"):
            if arr.dim() != 4:
                raise ValueError(f"{tf_name}: expected a 4-D kernel, got shape {tuple(arr.shape)}")
            arr = arr.permute(
                3, 2, 0, 1
            )  # [kh, kw, in, out] -> [out, in, kh, kw]; deconv [.., out, in] -> [in, out, ..]
        elif arr.dim() != 1:
            raise ValueError(f"{tf_name}: expected a 1-D bias, got shape {tuple(arr.shape)}")
        state[key] = arr.contiguous().clone()
    used = {tf for _, tf, _ in rows}
    ignored = sorted(n for n in variables if n not in used)
    config = scfegan_config(state, padding_mode="tf_same")
    config["self_gated_deconv"] = True  # the official graph's deconv gate (ops.py:31-54, issue #37)
    return state, config, ignored


def torch_to_tf(state: Mapping[str, torch.Tensor], prefix: str = "generator/", dead_biases: bool = True) -> dict:
    """The inverse of :func:`tf_to_torch`: a PyTorch SC-FEGAN state dict -> official TF names and layouts
    (numpy float32).  ``dead_biases`` adds the zero ``biases2`` the official checkpoint carries.  Only the
    official self-gated deconv variant has TF names."""
    if any(k.endswith(".gate.weight") and k.startswith("deconv") for k in state):
        raise ValueError("torch_to_tf: only self_gated_deconv=True (the official variant) has TF variable names")
    out = {}
    for key, tf_name, kind in _mapping(prefix):
        t = state[key].detach().cpu().float()
        if kind in ("kernel", "deconv"):
            t = t.permute(2, 3, 1, 0)  # inverse of permute(3, 2, 0, 1)
        out[tf_name] = t.contiguous().numpy().copy()
    if dead_biases:
        for layer in DECONV_LAYERS:
            out[f"{prefix}{layer}/biases2"] = np.zeros_like(out[f"{prefix}{layer}/biases1"])
    return out


def official_tf_generator(tf, V, x, prefix: str = "generator/"):
    """The official generator graph (model.py:29-86 / ops.py:8-54) in TF ops, NHWC.

    ``tf`` is the TensorFlow module (passed in: an optional extra), ``V`` maps the TF variable names to tensors.
    The reference for the conversion test (tests/test_weights_layouts.py) and the CPU timing against TF
    (benchmarks/scfegan_cpu_vs_tf.py).
    """

    def gconv(x, name, s=1, d=1, lrn=True, act=True):
        def conv(scope):
            # tf.nn.convolution is what the official tf.layers.conv2d calls (space-to-batch when dilated).
            return (
                tf.nn.convolution(x, V[prefix + scope + "/kernel"], strides=s, padding="SAME", dilations=d)
                + V[prefix + scope + "/bias"]
            )

        f = conv(name)
        if lrn:
            f = tf.nn.lrn(f, bias=5e-5)
        if act:
            f = tf.nn.leaky_relu(f, 0.2)
        return f * tf.sigmoid(conv(name + "_g"))

    def deconv(x, name):
        w = V[prefix + name + "/w"]
        b, h, wd, _ = x.shape
        d = (
            tf.nn.conv2d_transpose(x, w, [b, 2 * h, 2 * wd, w.shape[2]], strides=2, padding="SAME")
            + V[prefix + name + "/biases1"]
        )
        d = tf.nn.leaky_relu(d, 0.2)
        return d * tf.sigmoid(d)  # the official self-gate

    x1 = gconv(x, "gconv1_ds", 2, lrn=False)
    x2 = gconv(x1, "gconv2_ds", 2)
    x3 = gconv(x2, "gconv3_ds", 2)
    x4 = gconv(x3, "gconv4_ds", 2)
    x5 = gconv(x4, "gconv5_ds", 2)
    x6 = gconv(x5, "gconv6_ds", 2)
    y = gconv(x6, "gconv7_ds", 2)
    for i, d in enumerate((2, 4, 8, 16), 1):
        y = gconv(y, f"co_conv{i}_dlt", 1, d)
    for i, skip in zip(range(1, 7), (x6, x5, x4, x3, x2, x1)):
        y = gconv(tf.concat([skip, deconv(y, f"deconv{i}")], 3), f"gconv{i + 7}")
    y = gconv(tf.concat([x, deconv(y, "deconv7")], 3), "gconv14", lrn=False, act=False)
    return tf.tanh(y)


def read_tf_checkpoint(path: str | os.PathLike) -> dict:
    """All variables of a TF checkpoint (prefix, ``.index`` or ``.data-*`` file) or of an ``.npz``, as numpy."""
    path = os.path.expanduser(str(path))
    if path.endswith(".npz"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path!r} does not exist")
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    prefix = re.sub(r"\.(index|data-\d+-of-\d+)$", "", path)
    if not os.path.isfile(prefix + ".index"):
        raise FileNotFoundError(
            f"TF checkpoint {prefix!r} not found: expected {prefix}.index and {prefix}.data-00000-of-00001 "
            "(pass the prefix, e.g. --tf-ckpt model/SC-FEGAN.ckpt)"
        )
    try:
        import tensorflow as tf  # optional extra, imported only here
    except ImportError as err:
        raise ImportError(TF_INSTALL_HINT) from err
    reader = tf.train.load_checkpoint(prefix)
    return {name: np.asarray(reader.get_tensor(name)) for name in reader.get_variable_to_shape_map()}


def convert(
    tf_ckpt: str | os.PathLike | Mapping,
    out: str | os.PathLike | None = None,
    bgr: bool = True,
    prefix: str | None = None,
) -> tuple[SCFEGANGenerator, dict]:
    """Convert (and write, when ``out`` is given) the official checkpoint.

    ``tf_ckpt``: a checkpoint prefix, an ``.npz``, or a mapping name -> array.  Returns the loaded generator
    and the metadata written with it (``bgr``: the channel order of the weights' image/colour channels).
    """
    variables = tf_ckpt if isinstance(tf_ckpt, Mapping) else read_tf_checkpoint(tf_ckpt)
    state, config, ignored = tf_to_torch(variables, prefix=prefix)
    net = SCFEGANGenerator(**{k: v for k, v in config.items() if k != "_target_"})
    load_into(net, state, source="converted SC-FEGAN checkpoint")
    meta = {
        "bgr": bool(bgr),
        "input_size": OFFICIAL_INPUT_SIZE,
        "noise_type": "binary16",  # official demo's noise channel (demo.py:139-144), what these weights were run with
        "source": "official SC-FEGAN TensorFlow checkpoint (run-youngjoo/SC-FEGAN, CC BY-NC 4.0)"
        if not isinstance(tf_ckpt, Mapping)
        else "SC-FEGAN TF variables",
        "ignored_variables": len(ignored),
    }
    if out is not None:
        save_generator_file(out, net, config, meta)
    return net.eval(), meta
