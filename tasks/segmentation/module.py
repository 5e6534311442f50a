"""DeepLabv3 semantic segmentation as a Lightning task (paper Sec. 6.3, Table 7).

Training: pixel-wise cross-entropy (void 255 ignored), optionally plus a Dice term, at the training output
stride. Evaluation: full-resolution images, optionally at another output stride (the paper's OS16 train /
OS8 eval) and with multi-scale + flipped inputs ("MF"), scored by mIoU over the whole split.

Evaluation and prediction run every image at its own size: a padded batch is split into groups of images of
one size, each run on its unpadded crop, because padding would reach the image-pooling branch (a mean over the
whole input) and the border convolutions, making scores depend on which images share a batch. Under DDP the
samples that the DistributedSampler repeats to even out the ranks are left out of the scores and the loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...backbone.settings import BackboneSettings
from ...heads.deeplab import label_map, upsample_logits
from ...models.deeplab import deeplabv3_mobilenet_v2
from ..base import BaseTask
from ..datamodule import dataset_value
from ..optim import Optimization
from ..qat import QATSettings
from .evaluation import SegmentationEvaluation, SegmentationEvaluator
from .loss import SegmentationLoss, SegmentationLossSettings
from .metrics import IGNORE_INDEX


class SegmentationTask(BaseTask):
    """MobileNetV2 + DeepLabv3 trained and evaluated on ``(images (N, 3, H, W), masks (N, H, W))`` batches.

    The network is ``self.model``, a :class:`mobilenetv2_dense.models.DeepLabV3` from
    :func:`mobilenetv2_dense.models.deeplabv3_mobilenet_v2`.

    Logs ``train/loss``, ``val/loss`` (the training loss over the whole split: cross-entropy per labelled pixel,
    plus ``dice_weight`` x Dice from split-level sums, each also logged as ``val/ce`` and ``val/dice`` when Dice is
    weighted; see :class:`~mobilenetv2_dense.tasks.segmentation.loss.SplitSegmentationLoss`), ``val/miou``,
    ``val/pixel_accuracy`` (``test/...`` likewise) and prints the per-class IoU table after each validation. Under
    DDP every value is the whole split's, each image once, equal to one process's.
    Evaluation batches may add each image's ``(h, w)`` (``(images, masks, sizes)``, see
    :func:`mobilenetv2_dense.datasets.segmentation.dataset.segmentation_collate`); each image is then evaluated at
    its own size.
    ``predict_step`` takes ``{"images", "paths", "sizes"}`` batches and returns one ``(h, w)`` uint8 index mask
    per image, predicted at its original size.

    Args:
        num_classes: K, the classes the data defines: mask labels, background included (21 for VOC); the CLI
            links it from ``data.num_classes``.
        backbone: width, starting weights (torchvision ``mobilenet_v2``: a local state_dict file, or a name that
            downloads), random init and freezing (:class:`mobilenetv2_dense.backbone.BackboneSettings`, a YAML block).
        output_stride: training output stride (16 in the paper; 8 costs ~4x the head MAdds).
        head: ``"lite"`` (no ASPP: 1x1 + image pooling, the paper's DeepLabv3-lite) or ``"aspp"``.
        decoder: add the DeepLabv3+ decoder on the stride-4 feature.
        loss: cross-entropy, optionally plus Dice (:class:`SegmentationLossSettings`, a YAML block).
        evaluation: how validate, test and predict run (:class:`SegmentationEvaluation`, a YAML block): their
            ``output_stride`` (``None``: the training one), test-time ``scales`` and ``flip``; they apply to an
            exported file too, whose output stride is the one it was exported at.
        optimization, channels_last, inference, qat: see :class:`mobilenetv2_dense.tasks.base.BaseTask` (DeepLab's
            optimisation: SGD, poly 0.9, lr 0.007, wd 4e-5); an exported file must carry logits (not ``--argmax``).
    """

    task_name = "segmentation"

    def __init__(
        self,
        num_classes: int,
        backbone: BackboneSettings = BackboneSettings(),
        output_stride: int = 16,
        head: Literal["lite", "aspp"] = "lite",
        decoder: bool = False,
        loss: SegmentationLossSettings = SegmentationLossSettings(),
        evaluation: SegmentationEvaluation = SegmentationEvaluation(),
        optimization: Optimization = Optimization(),
        channels_last: bool = False,
        inference: str = "eager",
        qat: QATSettings | None = None,
    ) -> None:
        super().__init__(optimization=optimization, channels_last=channels_last, inference=inference, qat=qat)
        self.save_hyperparameters()
        if not 2 <= num_classes <= IGNORE_INDEX:
            raise ValueError(f"SegmentationTask: num_classes must be in 2..255 (255 is the void label), "
                             f"got {num_classes}")
        if qat is not None and evaluation.output_stride not in (None, output_stride):
            raise ValueError(f"SegmentationTask: qat traces the network at output_stride {output_stride}, so it "
                             f"evaluates there too; set evaluation.output_stride to null or {output_stride}")
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.evaluation = evaluation
        self.model = deeplabv3_mobilenet_v2(num_classes=num_classes, output_stride=output_stride, head=head,
                                            decoder=decoder, **self.backbone_to_build(backbone).builder_kwargs())
        self.criterion = SegmentationLoss(loss)
        self.evaluators = nn.ModuleDict({stage: SegmentationEvaluator(num_classes, loss)
                                         for stage in ("val", "test")})
        self.class_names: list[str] | None = None
        # The last epoch's scores per stage ("val", "test"), per-class IoU included, for scripts and callbacks.
        self.last_scores: dict[str, dict[str, Tensor]] = {}

    # ---------------------------------------------------------------- set-up

    def setup(self, stage: str) -> None:
        super().setup(stage)  # checks num_classes against the data
        names = dataset_value(getattr(self.trainer, "datamodule", None), "class_names")
        self.class_names = [str(n) for n in names] if names is not None and len(names) == self.num_classes else None

    # The class names travel in the checkpoint: predict and export name the classes without the dataset.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)  # refuses non-finite weights
        checkpoint["class_names"] = self.class_names

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.class_names = self.class_names or checkpoint.get("class_names")  # the data module's names win

    # ---------------------------------------------------------------- inference

    def log_probabilities(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` -> ``(N, K, H, W)`` log of the softmax probabilities averaged over test-time inputs.

        Every scale in ``evaluation.scales`` (and its left-right flip under ``evaluation.flip``) is run; logits are
        resized back to ``(H, W)`` before the softmax, as TF DeepLab's multi-scale inference does. With
        ``[1.0]`` and no flip this is ``log_softmax`` of one plain forward. Every image runs at ``(H, W)``: for a
        padded batch of images of different sizes use :meth:`log_probabilities_by_size`.
        """
        size = images.shape[-2:]
        total, count = None, 0
        for scale in self.evaluation.scales:
            scaled = images if scale == 1 else F.interpolate(images, scale_factor=scale, mode="bilinear",
                                                             align_corners=False)
            for flip in (False, True) if self.evaluation.flip else (False,):
                logits = self._logits(scaled.flip(-1) if flip else scaled)
                if flip:
                    logits = logits.flip(-1)
                if logits.shape[-2:] != size:
                    logits = upsample_logits(logits, size)
                log_probs = logits.float().log_softmax(1)
                # log(sum of probabilities), accumulated in log space so no (views x N x K x H x W) stack is held
                total = log_probs if total is None else torch.logaddexp(total, log_probs)
                count += 1
        return total - math.log(count)

    def _logits(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` normalised -> ``(N, K, H, W)`` logits of the ``inference`` backend."""
        return self.backend()(images)["seg_logits"]

    def log_probabilities_by_size(self, images: Tensor, sizes: Sequence[tuple[int, int]],
                                  keep: Sequence[bool] | None = None) -> Iterator[tuple[list[int], Tensor]]:
        """Each image of a padded ``(N, 3, H, W)`` batch at its own size: yields ``(members, (n, K, h, w))`` per
        group of images of one ``(h, w)`` in ``sizes``, computed on their top-left ``(h, w)`` crop.

        Equal-sized images share a forward pass (no padding to leak); ``keep`` leaves images out.
        """
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (h, w) in enumerate(sizes):
            if keep is None or keep[i]:
                groups.setdefault((int(h), int(w)), []).append(i)
        for (h, w), members in groups.items():
            crop = images[members, :, :h, :w] if len(members) < len(images) else images[:, :, :h, :w]
            yield members, self.log_probabilities(crop)

    def _set_eval_stride(self) -> None:
        if self.evaluation.output_stride is not None:
            self.model.set_output_stride(self.evaluation.output_stride)

    def _restore_train_stride(self) -> None:
        if self.evaluation.output_stride is not None:
            self.model.set_output_stride(self.output_stride)

    # Lightning calls these once per validation / test / predict run, also inside fit.
    on_validation_start = _set_eval_stride
    on_validation_end = _restore_train_stride
    on_test_start = _set_eval_stride
    on_test_end = _restore_train_stride
    on_predict_start = _set_eval_stride
    on_predict_end = _restore_train_stride

    # ---------------------------------------------------------------- steps

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        images, masks = batch[0], batch[1]  # training crops share one size: no per-image sizes needed
        losses = self.criterion(self.run_network(images)["out"], masks)
        if (skipped := self.skip_nonfinite(losses)) is not None:
            return skipped
        if "dice" in losses:
            self.log("train/dice", losses["dice"], batch_size=images.shape[0])
            self.log("train/ce", losses["ce"], batch_size=images.shape[0])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=images.shape[0])
        return losses["loss"]

    def _evaluate(self, batch: tuple[Tensor, ...], stage: str, dataloader_idx: int) -> None:
        images, masks = batch[0], batch[1]
        sizes = batch[2] if len(batch) > 2 else [tuple(images.shape[-2:])] * len(images)
        loaders = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        loader = loaders[dataloader_idx] if isinstance(loaders, (list, tuple)) else loaders
        evaluator = self.evaluators[stage]
        keep = evaluator.keep(loader, len(images), dataloader_idx)
        for members, log_probs in self.log_probabilities_by_size(images, sizes, keep):
            # NLL of log-softmax is the cross-entropy; with test-time augmentation it scores the averaged
            # probabilities.
            evaluator.update(log_probs, masks[members, : log_probs.shape[-2], : log_probs.shape[-1]])

    def on_validation_epoch_start(self) -> None:
        self.evaluators["val"].start()

    def on_test_epoch_start(self) -> None:
        self.evaluators["test"].start()

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val", dataloader_idx)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test", dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self.evaluators["val"].finish(self, "val", self.class_names)

    def on_test_epoch_end(self) -> None:
        self.evaluators["test"].finish(self, "test", self.class_names)

    def predict_step(self, batch: dict, batch_idx: int) -> list[Tensor]:
        """``{"images": (N, 3, H, W), "sizes": [(h, w)], ...}`` -> N uint8 ``(h, w)`` index masks, each image
        predicted at its own size."""
        masks: list[Tensor | None] = [None] * len(batch["sizes"])
        for members, log_probs in self.log_probabilities_by_size(batch["images"], batch["sizes"]):
            for i, mask in zip(members, label_map(log_probs).to(torch.uint8)):  # (n, h, w)
                masks[i] = mask
        return masks
