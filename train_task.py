"""Train, validate, test or predict any task of this project from a LightningCLI YAML config.

    python train_task.py fit --config configs/ssdlite_mobilenetv2_coco.yaml
    python train_task.py predict --config configs/ssdlite_shapes_demo.yaml --ckpt_path runs/.../last.ckpt

Every config names its LightningModule (``model.class_path``) and LightningDataModule (``data.class_path``);
constructor signatures are the schema (``python train_task.py fit --config X --print_config`` shows it all).
With ``--ckpt_path`` the model's arguments come from the checkpoint where the config file and the checkpoint
disagree, and from the command line over both (``tasks/cli.py``): ``validate --ckpt_path best.ckpt
--model.init_args.eval_output_stride 8`` evaluates the trained architecture at output stride 8.
"""

from __future__ import annotations

import lightning as L

from tasks.checkpointing import ResumableTraining
from tasks.cli import TaskCLI


def cli_main(args: list[str] | None = None, run: bool = True) -> TaskCLI:
    """Run the CLI on ``args`` (``sys.argv`` when ``None``); ``run=False`` only instantiates model and data.

    With ``run=False`` the arguments have no subcommand: ``cli_main(["--config", path], run=False)``.
    """
    return TaskCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [ResumableTraining()]},  # checkpoint on SIGTERM, atomic writes, RNG states
    )


if __name__ == "__main__":
    cli_main()
