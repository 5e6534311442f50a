"""``mobilenetv2-dense`` / ``python -m mobilenetv2_dense``: the LightningCLI of ``train_task.py`` (``fit``,
``validate``, ``test``, ``predict``), plus five commands of their own:

- ``export``: a checkpoint to ONNX or ExecuTorch (``commands/export.py``, also ``python export.py``);
- ``plot RUN_DIR``: the training curves of a run folder (``commands/plot.py``);
- ``anchors``: fits a detection config's anchors to its training boxes (``commands/anchors.py``);
- ``convert``: writes a detection config's data as YOLO, COCO or VOC files (``commands/convert.py``);
- ``benchmark``: a checkpoint in every deploy format, its metric and latency in one table (``commands/benchmark.py``).
"""

import importlib
import sys

# subcommand -> the module whose ``main(args)`` runs it (imported only when used: each pulls its own libraries)
COMMANDS = {
    "export": "mobilenetv2_dense.commands.export",
    "plot": "mobilenetv2_dense.commands.plot",
    "anchors": "mobilenetv2_dense.commands.anchors",
    "convert": "mobilenetv2_dense.commands.convert",
    "benchmark": "mobilenetv2_dense.commands.benchmark",
}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] and args[0] in COMMANDS:
        importlib.import_module(COMMANDS[args[0]]).main(args[1:])
    else:
        from mobilenetv2_dense.commands.cli import cli_main

        cli_main(argv)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    main()
