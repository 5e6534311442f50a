"""ImageNet-style classification: pre-training the MobileNetV2 backbone (paper Sec. 6.1, Table 4)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from ...backbone.settings import BackboneSettings
from ...models.classifier import mobilenet_v2_classifier
from ..base import BaseTask
from ..optim import Optimization
from ..qat import QATSettings


class ClassificationTask(BaseTask):
    """MobileNetV2 classifier (:func:`mobilenetv2_dense.models.mobilenet_v2_classifier`). ``self.model(images)``
    returns ``{"logits": (N, K)}``.

    Logs ``train/loss``, ``val/loss``, ``val/acc1`` and ``val/acc5`` (top-5 becomes top-K when K < 5).

    Args:
        num_classes: K, the classes the data defines (class folders); the CLI links it from ``data.num_classes``.
        backbone: width, starting weights (a torchvision mobilenet_v2 state_dict file or ImageNet weights name; a
            classifier of another class count is left initialised), random init and freezing
            (:class:`mobilenetv2_dense.backbone.BackboneSettings`, a YAML block).
        dropout: before the last linear layer.
        label_smoothing: cross-entropy label smoothing (0 in the paper).
        optimization, channels_last, inference, qat: see :class:`mobilenetv2_dense.tasks.base.BaseTask`.
    """

    task_name = "classification"

    def __init__(self, num_classes: int, backbone: BackboneSettings = BackboneSettings(), dropout: float = 0.2,
                 label_smoothing: float = 0.0, optimization: Optimization = Optimization(),
                 channels_last: bool = False, inference: str = "eager",
                 qat: QATSettings | None = None) -> None:
        super().__init__(optimization=optimization, channels_last=channels_last, inference=inference, qat=qat)
        self.save_hyperparameters()
        self.num_classes = num_classes
        self.model = mobilenet_v2_classifier(num_classes=num_classes, dropout=dropout,
                                             **self.backbone_to_build(backbone).builder_kwargs())
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        top_k = min(5, num_classes)
        self.val_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=top_k, average="micro")

    def forward(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` -> ``(N, K)`` logits of the network (training) or the ``inference`` backend."""
        return self.backend()(images)["logits"]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        loss = self.criterion(self(images), labels)
        if (skipped := self.skip_nonfinite({"loss": loss})) is not None:
            return skipped
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(labels))
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], prefix: str) -> None:
        images, labels = batch
        logits = self(images)
        self.val_acc1(logits, labels)
        self.val_acc5(logits, labels)
        n = len(labels)
        self.log(f"{prefix}/loss", self.criterion(logits, labels), sync_dist=True, batch_size=n)
        self.log(f"{prefix}/acc1", self.val_acc1, prog_bar=True, batch_size=n)
        self.log(f"{prefix}/acc5", self.val_acc5, batch_size=n)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return torch.softmax(self(batch[0]), dim=1)
