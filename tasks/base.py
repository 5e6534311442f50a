"""What every task shares: the network as ``self.model``, optimisation from config, channels_last."""

from __future__ import annotations

from typing import Any, Self

import lightning as L
import torch
from torch import Tensor

from tasks.optim import Optimization, build_optimizer, build_scheduler


class BaseTask(L.LightningModule):
    """Base LightningModule. Subclasses set ``self.model`` (a plain ``nn.Module``: images -> dict of tensors).

    Args:
        optimization: optimiser, peak lr, schedule and warm-up (see :class:`tasks.optim.Optimization`).
        channels_last: run the network in NHWC memory format (faster convolutions on recent GPUs and CPUs).
    """

    def __init__(self, optimization: Optimization | None = None, channels_last: bool = False) -> None:
        super().__init__()
        self.optimization = optimization or Optimization()
        self.channels_last = channels_last

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Self:
        """Lightning's, but ``backbone_weights`` is not loaded (unless given): the checkpoint holds the trained
        weights, so a checkpoint naming torchvision's ImageNet weights or a file since gone loads offline."""
        kwargs.setdefault("backbone_weights", None)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def prepare_images(self, images: Tensor) -> Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def configure_optimizers(self) -> dict:
        optimizer = build_optimizer(self, self.optimization)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        scheduler = build_scheduler(optimizer, self.optimization, total_steps=total,
                                    steps_per_epoch=max(1, total // epochs))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
