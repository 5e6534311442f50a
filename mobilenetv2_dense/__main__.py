"""``python -m mobilenetv2_dense fit --config CONFIG``: the same CLI as ``train_task.py``."""

from mobilenetv2_dense.tasks.cli import cli_main

if __name__ == "__main__":
    cli_main()
