"""``mobilenetv2-dense`` / ``python -m mobilenetv2_dense``: the LightningCLI of ``train_task.py``
(``fit``, ``validate``, ``test``, ``predict``), plus ``export``, the command of ``export.py``, and ``anchors``, which
fits a detection config's anchors to its training boxes (``tasks/detection/anchors.py``)."""

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["export"]:
        from mobilenetv2_dense.deploy.export import main as export_main

        export_main(args[1:])
    elif args[:1] == ["anchors"]:
        from mobilenetv2_dense.tasks.detection.anchors import main as anchors_main

        anchors_main(args[1:])
    else:
        from mobilenetv2_dense.tasks.cli import cli_main

        cli_main(argv)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    main()
