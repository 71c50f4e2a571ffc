"""Write an interpolated ESRGAN generator (library: :mod:`weights.interpolate`).

    python -m scripts.interpolate PSNR.pth GAN.pth --alpha 0.8 --out interp_08.pth

See :mod:`weights.interpolate` and the README for what it does.
"""

import tv_compat

import argparse

from weights.interpolate import load_and_interpolate, save_state_dict
from weights.io import check_output_file


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.interpolate",
        description="Write (1 - alpha) * PSNR + alpha * GAN generator weights (ESRGAN network interpolation).",
    )
    parser.add_argument("psnr_weights", help="the PSNR-oriented generator (.pth or this project's .ckpt)")
    parser.add_argument("gan_weights", help="the GAN generator, same architecture")
    parser.add_argument("--alpha", type=float, required=True, help="0 = PSNR model, 1 = GAN model (paper: 0.8)")
    parser.add_argument("--out", required=True, help="output .pth (BasicSR {params, params_ema} container)")
    parser.add_argument(
        "--key",
        default="params_ema",
        choices=("params_ema", "params"),
        help="which generator of a BasicSR container to read (default params_ema)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out (never an input)")
    args = parser.parse_args(argv)
    check_output_file(args.out, (args.psnr_weights, args.gan_weights), args.overwrite, "--out", "--overwrite")
    state = load_and_interpolate(args.psnr_weights, args.gan_weights, args.alpha, prefer=args.key)
    save_state_dict(args.out, state)
    print(
        f"wrote {args.out}: (1 - {args.alpha:g}) * {args.psnr_weights} + {args.alpha:g} * {args.gan_weights} "
        f"({len(state)} tensors)"
    )
    return args.out


if __name__ == "__main__":
    main()
