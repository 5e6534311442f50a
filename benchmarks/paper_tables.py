"""The paper's Tables 4, 6 and 7 beside this project's models, built from the experiment configs.

    python -m benchmarks.paper_tables

Counts come from ``mobilenetv2_dense.backbone.complexity`` (parameters; multiply-adds of convolutions and linear layers,
as the paper counts them). Nothing is trained or downloaded: the configs' optional ImageNet weights are skipped.
"""

from __future__ import annotations

from pathlib import Path

import mobilenetv2_dense.backbone.weights
from benchmarks.common import print_table
from mobilenetv2_dense.backbone import mobilenet_v2
from mobilenetv2_dense.backbone.complexity import count_madds, count_parameters
from mobilenetv2_dense.commands.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = ROOT / "configs"


def _network(config: str, num_classes: int):
    """The ``self.model`` of a config's task, without data, weights or a run (``num_classes`` is given, since
    the CLI would otherwise read it from the dataset, which need not be here)."""
    # counts only: skip the configs' optional weight downloads
    mobilenetv2_dense.backbone.weights.load_weights = lambda model, weights: None
    return cli_main(["--config", str(CONFIGS / config), "--trainer.logger", "false",
                     "--model.init_args.num_classes", str(num_classes)], run=False).model.model


def _row(name: str, paper_params: float, paper_madds: float, model, size: tuple[int, int]) -> tuple:
    params, madds = count_parameters(model), count_madds(model, size)
    return (name, f"{size[0]}x{size[1]}", f"{paper_params:.2f}M", f"{params / 1e6:.2f}M",
            f"{params / 1e6 / paper_params - 1:+.1%}", f"{paper_madds:.2f}B", f"{madds / 1e9:.3f}B",
            f"{madds / 1e9 / paper_madds - 1:+.1%}")


def main() -> None:
    header = ("model", "input", "paper params", "ours", "diff", "paper MAdds", "ours", "diff")
    rows = [_row(f"MobileNetV2 {w}", p, m, mobilenet_v2(width_mult=w, num_classes=1000), (224, 224))
            for w, p, m in ((1.0, 3.4, 0.300), (1.4, 6.9, 0.585))]
    print_table("Table 4 (ImageNet classification)", rows, header)

    ssdlite = _network("ssdlite_mobilenetv2_coco.yaml", num_classes=80)
    rows = [_row("MobileNetV2 + SSDLite, 80 classes", 4.3, 0.8, ssdlite, (320, 320))]
    print_table("Table 6 (COCO detection, configs/ssdlite_mobilenetv2_coco.yaml)", rows, header)

    rows = []
    for config, name, params, madds in (("deeplabv3lite_mobilenetv2_voc.yaml", "MNet V2* OS16, no ASPP", 2.11, 2.75),
                                        ("deeplabv3_mobilenetv2_voc.yaml", "MNet V2* OS16, ASPP", 4.52, 5.8)):
        network = _network(config, num_classes=21)
        rows += [_row(name, params, madds, network, size) for size in ((512, 512), (513, 513))]
    print_table("Table 7 (VOC segmentation, configs/deeplabv3*_voc.yaml)", rows, header)
    print("\nTable 7 MAdds: TF DeepLab evaluates 513x513 crops; its atrous convs (space_to_batch) also compute the\n"
          "padding to a multiple of the rate, +0.458B for the three ASPP branches: 5.364B + 0.458B = 5.82B\n"
          "(see models/deeplab.py).")


if __name__ == "__main__":
    main()
