"""The rules every command that writes applies to its outputs, checked before anything is read or written."""

import os


def output_clashes(targets) -> set[str]:
    """The output paths that more than one input would be written to: one pass over ``targets`` (any iterable),
    a set lookup each, so O(n)."""
    seen: set[str] = set()
    clashes: set[str] = set()
    for t in targets:
        key = os.path.normcase(os.path.normpath(os.fspath(t)))
        if key in seen:
            clashes.add(key)
        else:
            seen.add(key)
    return clashes


def _real(p) -> str:
    return os.path.normcase(os.path.realpath(os.fspath(p)))


def _inside(child: str, parent: str) -> bool:
    return child != parent and os.path.commonpath([child, parent]) == parent


def check_outputs(inputs: list, targets: list, in_root, out_dir, overwrite: bool = False) -> None:
    """Refuse, before anything is read or written, outputs that would destroy or re-read inputs.

    Always refused: ``output`` equal to the input folder, an output folder inside the input folder (a later run
    would take the earlier results as inputs), any output file that is an input file (through links too), and an
    output folder that is an existing file.  Existing output files are replaced only with ``overwrite=true``.
    O(n): one set of the inputs' real paths, one lookup and one ``lstat`` per output.
    """
    out_real = _real(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"output={str(out_dir)!r} is an existing file; ESRGAN writes into a folder: give one")
    if in_root is not None:
        in_real = _real(in_root)
        if out_real == in_real:
            raise ValueError(
                f"output={str(out_dir)!r} is the input folder: the results would replace the originals. "
                "Choose another folder (refused even with overwrite=true: inputs are never overwritten)"
            )
        if _inside(out_real, in_real):
            raise ValueError(
                f"output={str(out_dir)!r} is inside the input folder {str(in_root)!r}: its results "
                "would be taken as inputs by the next run. Choose a folder outside the input folder"
            )
    sources = {_real(f) for f in inputs}
    hit = next((t for t in targets if _real(t) in sources), None)
    if hit is not None:
        raise ValueError(
            f"output file {str(hit)!r} is one of the input images: it would be overwritten. "
            "Choose another output (refused even with overwrite=true)"
        )
    if not overwrite:
        existing = [str(t) for t in targets if os.path.lexists(t)]
        if existing:
            raise FileExistsError(
                f"{len(existing)} output file(s) already exist, e.g. {existing[:3]}: nothing was "
                "written. Pass overwrite=true to replace them, or choose another output folder"
            )
