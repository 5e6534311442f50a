"""SSDLite detection + DeepLabv3-lite segmentation on one MobileNetV2 as a LightningModule.

The task holds the detection task's parts (the label set, the COCO evaluator) and the segmentation task's (the
segmentation evaluator), and one objective over both (:class:`JointLoss`): one validation computes both metric
sets from one forward pass per batch: ``val/map*`` and ``val/miou``, ``val/pixel_accuracy`` (scored at each image's
original size, as the segmentation task scores).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ...backbone.settings import BackboneSettings
from ...heads.anchors import AnchorSettings
from ...heads.deeplab import label_map
from ...heads.loss import SSDLoss, SSDLossSettings
from ...heads.postprocess import PostProcessing
from ...models.joint import ssdlite_deeplabv3_mobilenet_v2
from ..base import BaseTask
from ..datamodule import dataset_value
from ..detection.anchors import fit_task_anchors
from ..detection.evaluation import Backend, scale_to_original, split_predict_batch
from ..detection.evaluator import DetectionEvaluator
from ..detection.labels import LabelSet
from ..distributed import log_split_values
from ..optim import Optimization
from ..qat import QATSettings
from ..segmentation.evaluation import SegmentationEvaluator
from ..segmentation.loss import SegmentationLossSettings
from ..segmentation.metrics import IGNORE_INDEX
from .loss import JointLoss, LossWeights, logits_by_size


class JointTask(BaseTask):
    """SSDLite + DeepLabv3-lite on one backbone (:func:`mobilenetv2_dense.models.ssdlite_deeplabv3_mobilenet_v2`):
    training on both losses, COCO mAP and mIoU in one validation, prediction of boxes and masks.

    Batches follow the joint contract (``datasets/joint/dataset.py``): the detection batch, each target with a
    ``mask`` (labels 0..K_seg-1, 255 void) at the input size in training and at the original size in evaluation.

    Logs ``train/loss`` (the weighted sum), ``train/detection_loss`` (with ``train/bbox_regression``,
    ``train/classification``), ``train/segmentation_loss`` (with ``train/ce``, and ``train/dice`` when weighted);
    after each validation ``val/loss`` (the weighted sum), ``val/detection_loss`` (SSD's loss over the whole split,
    with ``val/bbox_regression``, ``val/classification``), ``val/segmentation_loss`` (the segmentation loss over the
    whole split, with ``val/ce`` and ``val/dice`` when Dice is weighted), the detection task's ``val/map`` ...
    ``val/mar_100``, ``val/miou`` and ``val/pixel_accuracy`` (``test/...`` likewise), and prints the per-class IoU
    table. Under DDP every value is the whole split's, each image once, equal to one process's.

    Args:
        num_classes: K object classes of the detector; the CLI links it from ``data.num_classes``.
        num_seg_classes: K_seg segmentation classes, background included; ``None``: ``num_classes + 1``, what every
            joint data module defines (the background, then the detector's classes), checked against
            ``data.num_seg_classes`` at set-up.
        backbone: as :class:`~mobilenetv2_dense.tasks.detection.DetectionTask`'s (here ``init: kaiming`` by default).
        decoder: the backbone feature a DeepLabv3+ decoder refines the segmentation with (the head alone sits at
            output stride 32): ``stage2`` (stride 4), ``stage3`` (8) or the detector's tap ``stage6_expansion``
            (16, the cheapest); ``None``: no decoder.
        loss: the detector's (:class:`mobilenetv2_dense.heads.SSDLossSettings`); here matching anchors at the paper's
            IoU 0.5 by default, the setting the joint benchmark measured the joint model with.
        segmentation_loss: cross-entropy, optionally plus Dice
            (:class:`~mobilenetv2_dense.tasks.segmentation.loss.SegmentationLossSettings`).
        loss_weights: the two losses' weights in ``train/loss`` (:class:`LossWeights`).
        post_processing, evaluator, anchors, fit_anchors: the detector's, as
            :class:`~mobilenetv2_dense.tasks.detection.DetectionTask`'s (the ``anchors`` command takes a joint config
            too).
        optimization, channels_last, inference, qat: see :class:`mobilenetv2_dense.tasks.base.BaseTask`; an
            exported file must carry logits (not ``--argmax``) and computes no loss.
    """

    task_name = "joint"

    def __init__(
        self,
        num_classes: int,
        num_seg_classes: int | None = None,
        backbone: BackboneSettings = BackboneSettings(),
        decoder: str | None = None,
        loss: SSDLossSettings = SSDLossSettings(),
        segmentation_loss: SegmentationLossSettings = SegmentationLossSettings(),
        loss_weights: LossWeights = LossWeights(),
        post_processing: PostProcessing = PostProcessing(),
        evaluator: Backend = "faster_coco_eval",
        anchors: AnchorSettings = AnchorSettings(),
        fit_anchors: bool = False,
        optimization: Optimization = Optimization(),
        channels_last: bool = False,
        inference: str = "eager",
        qat: QATSettings | None = None,
    ) -> None:
        super().__init__(optimization=optimization, channels_last=channels_last, inference=inference, qat=qat)
        self.save_hyperparameters()
        num_seg_classes = num_classes + 1 if num_seg_classes is None else num_seg_classes
        if not 2 <= num_seg_classes <= IGNORE_INDEX:
            raise ValueError(f"JointTask: num_seg_classes must be in 2..255 (background included, 255 is void), "
                             f"got {num_seg_classes}")
        self.num_classes, self.num_seg_classes = num_classes, num_seg_classes
        self.fit_anchors = fit_anchors
        self.model = ssdlite_deeplabv3_mobilenet_v2(
            num_classes=num_classes, num_seg_classes=num_seg_classes, decoder=decoder is not None,
            decoder_feature=decoder or "stage2", **self.backbone_to_build(backbone).builder_kwargs(),
            classification=loss.classification, post_processing=post_processing, anchors=anchors)
        if loss.classification == "focal":
            self.model.head.set_class_prior(0.01)
        self.criterion = JointLoss(SSDLoss(loss), detection_weight=loss_weights.detection,
                                   segmentation_weight=loss_weights.segmentation,
                                   dice_weight=segmentation_loss.dice_weight)
        self.labels = LabelSet()
        self.seg_class_names: list[str] | None = None
        self.evaluator = DetectionEvaluator(evaluator)
        # Per evaluation stage: the segmentation scores and loss (the COCO evaluator holds the detection loss).
        self.seg_evaluators = nn.ModuleDict({stage: SegmentationEvaluator(num_seg_classes, segmentation_loss)
                                             for stage in ("val", "test")})
        self.last_scores: dict[str, dict[str, Tensor]] = {}  # the last epoch's segmentation scores per stage

    # ----------------------------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        super().setup(stage)  # num_classes against the data
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        self.labels.read(datamodule)
        data_seg_classes = dataset_value(datamodule, "num_seg_classes")
        names = dataset_value(datamodule, "seg_class_names")
        if data_seg_classes is not None and data_seg_classes != self.num_seg_classes:
            raise ValueError(
                f"JointTask: model.num_seg_classes is {self.num_seg_classes} but {type(datamodule).__name__} has "
                f"num_seg_classes={data_seg_classes}; set model.init_args.num_seg_classes to {data_seg_classes}, or "
                "leave it out of the config: the CLI takes it from the data module")
        if names is not None and len(names) == self.num_seg_classes:
            self.seg_class_names = [str(name) for name in names]

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.fit_anchors and self.qat is None:  # QAT keeps the anchors of the checkpoint it starts from
            fit_task_anchors(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # refuses non-finite weights
        self.labels.save(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.labels.load(checkpoint)
        if self.seg_class_names is None and self.labels.class_names is not None:  # predicting without the dataset
            self.seg_class_names = ["background", *self.labels.class_names]

    # -------------------------------------------------------------------------------------------- training
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Raw network outputs: the detector's ``bbox_regression``, ``cls_logits``, ``anchors`` and ``out``."""
        return self.run_network(images)

    def training_step(self, batch: tuple[Tensor, list[dict]], batch_idx: int) -> Tensor:
        images, targets = batch
        losses = self.criterion(self(images), targets, self.model.box_coder)
        if (skipped := self.skip_nonfinite(losses)) is not None:
            return skipped
        size = len(targets)
        self.log("train/loss", losses["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        for name in ("detection", "segmentation"):
            self.log(f"train/{name}_loss", losses[name], on_step=True, on_epoch=True, batch_size=size)
        for name in ("bbox_regression", "classification", "ce", "dice"):
            if name in losses:
                self.log(f"train/{name}", losses[name], on_step=True, on_epoch=True, batch_size=size)
        return losses["loss"]

    # ------------------------------------------------------------------------------------------ evaluation
    def _evaluation_step(self, batch: tuple[Tensor, list[dict]], stage: str) -> None:
        """Detections into the COCO evaluator, masks into the segmentation evaluator, one forward pass."""
        images, targets = batch
        prediction = self.backend()(images)
        # Per-image SSD loss terms, summed over the split at its end: an exported file gives no raw outputs for them.
        loss_terms = (self.criterion.detection.per_image(prediction["network"], targets, self.model.box_coder)
                      if "network" in prediction else None)
        detections = scale_to_original(prediction["detections"], tuple(images.shape[-2:]),
                                       [t["orig_size"] for t in targets])
        self.evaluator.update(detections, targets, self.labels.label_to_cat_id, loss_terms)
        self._score_masks(prediction["seg_logits"], targets, stage)

    def _score_masks(self, logits: Tensor, targets: list[dict], stage: str) -> None:
        """Segmentation scores and cross-entropy at each image's mask size (a DistributedSampler's repeats left
        out, as the detection results leave them out)."""
        loaders = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        evaluator = self.seg_evaluators[stage]
        keep = [i for i, kept in enumerate(evaluator.keep(loader, len(targets))) if kept]
        if not keep:
            return
        masks = [targets[i]["mask"] for i in keep]
        for members, chosen in logits_by_size(logits[keep], [mask.shape for mask in masks]):
            evaluator.update(chosen.log_softmax(1), torch.stack([masks[i] for i in members]).to(chosen.device))

    def _start(self, stage: str) -> None:
        self.evaluator.start()
        self.seg_evaluators[stage].start()

    def _finish(self, stage: str) -> None:
        """Both evaluations of the split; ``{stage}/loss`` is the weighted sum of their split-level losses."""
        detection = self.evaluator.finish(self, stage, self.labels, loss_name="detection_loss")
        # The pictures get a seg_ prefix beside the detector's (the COCO evaluator's confusion matrix).
        _, segmentation = self.seg_evaluators[stage].finish(self, stage, self.seg_class_names, pictures="seg_",
                                                            loss_name="segmentation_loss")
        if "loss" in detection:  # an exported detector gives no raw outputs to compute its loss on
            log_split_values(self, {f"{stage}/loss": self.criterion.detection_weight * detection["loss"]
                                    + self.criterion.segmentation_weight * float(segmentation)})

    def on_validation_epoch_start(self) -> None:
        self._start("val")

    def validation_step(self, batch: tuple[Tensor, list[dict]], batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def on_test_epoch_start(self) -> None:
        self._start("test")

    def test_step(self, batch: tuple[Tensor, list[dict]], batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    # ------------------------------------------------------------------------------------------ prediction
    def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, Any]]:
        """Per image the detection task's prediction (``boxes`` in original pixels, ``scores``, ``labels``, ``path``,
        ``image_id``, ``orig_size``) plus ``mask``: ``(h, w)`` uint8 labels at the original size; on the CPU."""
        images, metas = split_predict_batch(batch)
        orig_sizes = [m["orig_size"] for m in metas]
        prediction = self.backend()(images)
        detections = scale_to_original(prediction["detections"], tuple(images.shape[-2:]), orig_sizes)
        masks: list[Tensor | None] = [None] * len(metas)
        for members, chosen in logits_by_size(prediction["seg_logits"], [tuple(s.tolist()) for s in orig_sizes]):
            for i, mask in zip(members, label_map(chosen).to(torch.uint8).cpu()):
                masks[i] = mask
        return [{**{k: v.cpu() for k, v in det.items()}, **meta, "mask": mask}
                for det, meta, mask in zip(detections, metas, masks)]
