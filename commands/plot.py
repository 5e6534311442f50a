"""The ``plot`` command: the training curves of a run folder as one PNG
(``python -m mobilenetv2_dense plot RUN_DIR``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..pictures.curves import find_log, plot_run

DESCRIPTION = ("Plot the training curves of a run folder (its CSVLogger metrics.csv or TensorBoard events) as "
               "one PNG.")


def main(argv: list[str] | None = None) -> Path:
    """``python -m mobilenetv2_dense plot RUN_DIR [--output F]``."""
    parser = argparse.ArgumentParser(prog="mobilenetv2-dense plot", description=DESCRIPTION)
    parser.add_argument("run_dir", help="a run folder (e.g. runs/shapes_detection), one version_N folder, or a "
                                        "metrics.csv / TensorBoard event file")
    parser.add_argument("--output", default=None, help="the PNG to write (default: training_curves.png beside the "
                                                       "log)")
    args = parser.parse_args(argv)
    log = find_log(args.run_dir)
    path = plot_run(log, args.output)
    print(f"{log} -> {path}")
    return path


if __name__ == "__main__":
    main()

