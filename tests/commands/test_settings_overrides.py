"""Settings blocks set from the command line as a user types them: a typed value and a ``null`` per block, through
``cli_main`` with the shipped configs (the YAML form is what the configs themselves exercise)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mobilenetv2_dense.commands.cli import cli_main, nested_nulls
from mobilenetv2_dense.tasks.optim import Optimization

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def parsed_model(config: str, *overrides: str):
    """The task ``fit --config config overrides`` builds (no data is read, nothing is trained)."""
    # num_classes given: the real datasets are not on this machine, and the task is all this reads
    cli = cli_main(["--config", str(CONFIGS / config), *overrides, "--model.init_args.backbone_weights", "null",
                    "--model.init_args.num_classes", "21"], run=False)
    return cli.model


def test_a_null_for_a_settings_field_is_rewritten_as_a_one_key_block():
    assert nested_nulls(["fit", "--model.init_args.optimization.reference_batch_size", "null", "--x", "null"]) == [
        "fit", "--model.init_args.optimization", '{"reference_batch_size": null}', "--x", "null"]
    assert nested_nulls(["--model.init_args.optimization.reference_batch_size=null"]) == [
        "--model.init_args.optimization", '{"reference_batch_size": null}']
    # a task argument (one level under init_args) and a typed value pass through
    kept = ["--model.init_args.eval_output_stride", "null", "--model.init_args.optimization.lr", "0.1"]
    assert nested_nulls(kept) == kept


@pytest.mark.parametrize("config", ["ssdlite_mobilenetv2_coco.yaml", "deeplabv3lite_mobilenetv2_voc.yaml"])
def test_optimization_takes_a_typed_value_and_a_null_from_the_command_line(config):
    """The README's ``reference_batch_size: null`` (use the lr as given) typed on the command line, beside a typed
    lr: both apply, and the config's other optimisation values stay."""
    configured = parsed_model(config).optimization
    assert configured.reference_batch_size is not None
    task = parsed_model(config, "--model.init_args.optimization.reference_batch_size", "null",
                        "--model.init_args.optimization.lr", "0.02")
    assert isinstance(task.optimization, Optimization)
    assert task.optimization.reference_batch_size is None and task.optimization.lr == 0.02
    assert task.optimization.optimizer == configured.optimizer
    assert task.optimization.weight_decay == configured.weight_decay
