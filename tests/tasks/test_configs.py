"""Every YAML in configs/ instantiates its model, data module and trainer (nothing runs, nothing downloads)."""

from pathlib import Path

import lightning as L
import pytest

from train_task import cli_main

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_instantiates(config, tmp_path, monkeypatch):
    import backbone.weights

    monkeypatch.chdir(tmp_path)  # runs/ and data/ paths stay in the tmp dir
    # ImageNet weights named in a config are an optional download: record the request instead of fetching.
    monkeypatch.setattr(backbone.weights, "load_weights", lambda model, weights: None)
    cli = cli_main(["--config", str(config)], run=False)
    assert isinstance(cli.model, L.LightningModule)
    assert isinstance(cli.datamodule, L.LightningDataModule)
    assert hasattr(cli.model, "model"), "each task keeps its network as self.model"
    names = {type(c).__name__ for c in cli.trainer.callbacks}
    assert "ModelCheckpoint" in names and cli.trainer.checkpoint_callback.save_last
    assert cli.trainer.progress_bar_callback is not None
    assert any(type(lg).__name__ == "CSVLogger" for lg in cli.trainer.loggers)
    try:
        data_classes = cli.datamodule.num_classes
    except (FileNotFoundError, OSError):
        return  # a dataset that is not on this machine: its class count comes from its files
    assert data_classes == cli.model.num_classes
