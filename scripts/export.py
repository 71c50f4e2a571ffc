"""Export a generator to safetensors, TorchScript or ONNX (library: :mod:`weights.export`).

    python -m scripts.export --weights PATH --format onnx --out G.onnx          [--kind auto|esrgan|scfegan]
    python -m scripts.export --weights PATH --format torchscript --out G.pt
    python -m scripts.export --weights PATH --format safetensors --out G.safetensors

See :mod:`weights.export` and the README for what it does.
"""

import tv_compat

import argparse

from weights.export import FORMATS, export_file


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.export", description="Export a generator to safetensors, TorchScript or ONNX."
    )
    parser.add_argument("--weights", required=True, help="generator file (.ckpt, .pth, .safetensors, TorchScript)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", default=None, help="output file (default: next to --weights)")
    parser.add_argument("--kind", default="auto", choices=("auto", "esrgan", "scfegan"))
    parser.add_argument(
        "--key",
        default="params_ema",
        choices=("params_ema", "params"),
        help="which generator of a container / checkpoint (default: the EMA one)",
    )
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--height", type=int, default=None, help="tracing input height (any valid size)")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out (never --weights)")
    args = parser.parse_args(argv)
    out = export_file(
        args.weights,
        args.format,
        args.out,
        kind=args.kind,
        prefer=args.key,
        opset=args.opset,
        height=args.height,
        width=args.width,
        overwrite=args.overwrite,
        flag="--overwrite",
    )
    print(f"wrote {out} ({args.format})")
    return out


if __name__ == "__main__":
    main()
