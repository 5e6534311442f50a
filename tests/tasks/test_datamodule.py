"""BaseDataModule: the loader options are declared once and stay flat keys of every data module in the CLI."""

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.tasks.datamodule import BaseDataModule

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_loader_options_are_flat_keys_of_every_data_module(config: Path, tmp_path: Path, monkeypatch) -> None:
    import mobilenetv2_dense.backbone.weights

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mobilenetv2_dense.backbone.weights, "load_weights", lambda model, weights: None)
    # no dataset here: the class count is given, not read from the data
    cli = cli_main(["--config", str(config), "--model.init_args.num_classes", "3",
                    "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0",
                    "--data.init_args.persistent_workers", "true", "--data.init_args.pin_memory", "false"], run=False)
    data = cli.datamodule
    assert isinstance(data, BaseDataModule)
    assert (data.batch_size, data.num_workers, data.persistent_workers, data.pin_memory) == (4, 0, True, False)
    assert not (tmp_path / "data").exists()  # nothing is read or written before prepare_data


def test_loaders_follow_the_options() -> None:
    data = BaseDataModule(batch_size=4, num_workers=0)
    data.train_dataset = data.val_dataset = TensorDataset(torch.arange(10))
    train, val = data.train_dataloader(), data.val_dataloader()
    assert (train.batch_size, train.drop_last, val.batch_size, val.drop_last) == (4, True, 4, False)
    assert train.pin_memory == torch.cuda.is_available()  # pin_memory=None: when CUDA is there
    data.train_dataset = TensorDataset(torch.arange(3))  # the whole split fits in one batch: keep it
    assert len(data.train_dataloader()) == 1
    assert BaseDataModule(batch_size=8, val_batch_size=2).val_batch_size == 2
    with pytest.raises(RuntimeError, match="call setup"):
        data.predict_dataloader()
