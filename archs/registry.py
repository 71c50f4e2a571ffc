"""The allow-list of networks this project builds from a config, a checkpoint or an export (:data:`ARCHITECTURES`),
and :func:`make_network`, the one place where a ``_target_`` turns into a class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

#: Every network this project builds from a config, a checkpoint or an export, by its Hydra ``_target_``:
#: ``(role, recipe)``.  This table is the only way a ``_target_`` turns into a class (see :func:`make_network`):
#: a file naming anything else (``numpy.savetxt``, ``torch.load``, ``os.system``...) is refused before any import,
#: and only the class's own constructor arguments, with primitive values, are passed.  New architectures in
#: ``archs/`` are added here (one line).
ARCHITECTURES = {
    "archs.rrdbnet.RRDBNet": ("generator", "esrgan"),
    "archs.srvgg.SRVGGNetCompact": ("generator", "esrgan"),  # Real-ESRGAN's compact realesr-* network
    "archs.scfegan_generator.SCFEGANGenerator": ("generator", "scfegan"),
    "archs.vgg_discriminator.VGGStyleDiscriminator": ("discriminator", "esrgan"),
    "archs.sn_patch_discriminator.SNPatchDiscriminator": ("discriminator", "scfegan"),
    "archs.unet_discriminator.UNetDiscriminatorSN": ("discriminator", "esrgan"),  # Real-ESRGAN's (c2's branch)
}
#: The generator classes a weights file may name (a subset of :data:`ARCHITECTURES`).
GENERATOR_TARGETS = {t: recipe for t, (role, recipe) in ARCHITECTURES.items() if role == "generator"}

#: Inclusive bounds on the size arguments a file may give these networks: a weights file or checkpoint cannot make the
#: loader build (and allocate) a network far beyond any published one.  Official sizes: RRDBNet 23 x 64 (6 x 64 for
#: the anime model); SRVGGNetCompact 16 or 32 convs x 64.
ARCHITECTURE_BOUNDS = {
    "archs.rrdbnet.RRDBNet": {
        "num_in_ch": (1, 64),
        "num_out_ch": (1, 64),
        "num_feat": (1, 1024),
        "num_block": (1, 256),
        "num_grow_ch": (1, 1024),
    },
    "archs.srvgg.SRVGGNetCompact": {
        "num_in_ch": (1, 64),
        "num_out_ch": (1, 64),
        "num_feat": (1, 1024),
        "num_conv": (0, 1024),
        "upscale": (1, 16),
    },
}


class UnsafeArchitectureError(ValueError):
    """A config or file names a network outside :data:`ARCHITECTURES`, or arguments it does not take."""


def _is_primitive(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_primitive(v) for v in value)
    return False


def checked_architecture(config: Mapping, source: str = "network config", role: str | None = None) -> tuple[str, dict]:
    """``(target, kwargs)`` of ``config`` after the allow-list checks of :func:`make_network` (nothing imported)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(config, Mapping):
        raise UnsafeArchitectureError(
            f"{source}: the network config must be a mapping with a _target_, got {type(config).__name__}"
        )
    cfg = dict(config)
    target = cfg.pop("_target_", None)
    if not isinstance(target, str) or target not in ARCHITECTURES:
        raise UnsafeArchitectureError(
            f"{source} names _target_ {target!r}, which is not one of this project's architectures "
            f"{sorted(ARCHITECTURES)}: refused (a checkpoint or weights file cannot choose what code runs)"
        )
    if role is not None and ARCHITECTURES[target][0] != role:
        raise UnsafeArchitectureError(
            f"{source} names {target!r}, a {ARCHITECTURES[target][0]}, where a {role} is expected"
        )
    special = sorted(k for k in cfg if not isinstance(k, str) or k.startswith("_"))
    if special:
        raise UnsafeArchitectureError(
            f"{source}: keys {special} are not allowed in a network config "
            "(only _target_ and the constructor's arguments)"
        )
    bad = sorted(k for k, v in cfg.items() if not _is_primitive(v))
    if bad:
        raise UnsafeArchitectureError(
            f"{source}: arguments {bad} of {target} must be numbers, strings, booleans, null or lists of them; "
            f"got {', '.join(f'{k}={type(cfg[k]).__name__}' for k in bad)}"
        )
    for name, (low, high) in ARCHITECTURE_BOUNDS.get(target, {}).items():
        value = cfg.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise UnsafeArchitectureError(f"{source}: {target} argument {name}={value!r} is outside [{low}, {high}]")
    return target, cfg


def make_network(config: Mapping, source: str = "network config", role: str | None = None) -> nn.Module:
    """Build ``{"_target_": one of ARCHITECTURES, **kwargs}``: the one place where train, evaluate, predict and
    export turn a config or a file's record into a network.  Refused (:class:`UnsafeArchitectureError`, naming
    ``source`` and the target): a target outside the table, a ``role`` mismatch, keys the constructor does not
    take, Hydra's special keys (``_args_``, ``_partial_``...), and non-primitive values."""
    import importlib
    import inspect

    target, kwargs = checked_architecture(config, source, role)
    module_name, _, class_name = target.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    params = inspect.signature(cls.__init__).parameters
    known = [n for n, p in params.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise UnsafeArchitectureError(f"{source}: {target} takes no argument(s) {unknown}; it takes {known}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{source}: cannot build {target}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}): {err}"
        ) from err
