"""Convert the official SC-FEGAN TensorFlow checkpoint (library: :mod:`weights.scfegan_convert`).

    python -m scripts.scfegan_convert --tf-ckpt PATH/SC-FEGAN.ckpt --out G.pth        # or G.safetensors
    python -m scripts.scfegan_convert --tf-ckpt variables.npz --out G.pth             # no TensorFlow needed

See :mod:`weights.scfegan_convert` and the README for what it does.
"""

import tv_compat

import argparse

from weights.io import check_output_file
from weights.scfegan_convert import convert


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.scfegan_convert",
        description="Convert the official SC-FEGAN TensorFlow checkpoint to this project's generator weights.",
    )
    parser.add_argument(
        "--tf-ckpt",
        required=True,
        help="checkpoint prefix (PATH/SC-FEGAN.ckpt: .index + .data-* next to it) or an .npz",
    )
    parser.add_argument(
        "--out", required=True, help="output .pth ({params, params_ema, generator, meta}) or .safetensors"
    )
    parser.add_argument(
        "--rgb",
        action="store_true",
        help="record the weights as RGB (default: BGR, which is what the released weights expect)",
    )
    parser.add_argument("--prefix", default=None, help="variable scope (default: found in the names, 'generator/')")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    check_output_file(args.out, (args.tf_ckpt, f"{args.tf_ckpt}.index"), args.overwrite, "--out", "--overwrite")
    net, meta = convert(args.tf_ckpt, args.out, bgr=not args.rgb, prefix=args.prefix)
    n = sum(p.numel() for p in net.parameters())
    print(
        f"wrote {args.out}: SC-FEGAN generator, {n:,} parameters, channel order {'BGR' if meta['bgr'] else 'RGB'}, "
        f"{meta['ignored_variables']} checkpoint variables not used (biases2, optimiser slots, ...)"
    )
    return args.out


if __name__ == "__main__":
    main()
