"""Train, validate, test or predict any task of this project from a LightningCLI YAML config.

The same command as the installed ``mobilenetv2-dense`` (and ``python -m mobilenetv2_dense``), kept at the
repository root for running from a checkout; the CLI itself is ``mobilenetv2_dense.commands.cli.cli_main``.

    python train_task.py fit --config configs/ssdlite_mobilenetv2_coco.yaml
    python train_task.py predict --config configs/ssdlite_shapes_demo.yaml --ckpt_path runs/.../last.ckpt

Every config names its LightningModule (``model.class_path``) and LightningDataModule (``data.class_path``);
constructor signatures are the schema (``python train_task.py fit --config X --print_config`` shows it all).
With ``--ckpt_path`` the model's arguments come from the checkpoint where the config file and the checkpoint
disagree, and from the command line over both (``commands/cli.py``): ``validate --ckpt_path best.ckpt
--model.init_args.evaluation.output_stride 8`` evaluates the trained architecture at output stride 8.
"""

from mobilenetv2_dense.commands.cli import cli_main

__all__ = ["cli_main"]

if __name__ == "__main__":
    cli_main()
