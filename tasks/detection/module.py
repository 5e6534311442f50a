"""SSDLite training, COCO evaluation and prediction as a LightningModule (paper section 6.2).

One validation pass computes the loss terms and the detections of each image; the detections are mapped back to
original image pixels, both are gathered over ranks (each image once) and the epoch is scored once with COCOeval
against ``datamodule.val_coco``; ``val/loss`` is SSD's loss over the whole split (:class:`DetectionEvaluator`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ...backbone.settings import BackboneSettings
from ...heads.anchors import AnchorSettings
from ...heads.loss import SSDLoss, SSDLossSettings
from ...heads.postprocess import PostProcessing
from ...models.ssdlite import ssdlite320_mobilenet_v2
from ..base import BaseTask
from ..optim import Optimization
from ..qat import QATSettings
from .anchors import fit_task_anchors
from .evaluation import Backend, scale_to_original, split_predict_batch
from .evaluator import DetectionEvaluator
from .labels import LabelSet


class DetectionTask(BaseTask):
    """SSDLite on a MobileNetV2 backbone: training, COCO mAP, prediction in original pixels.

    The network is ``self.model``, a :class:`mobilenetv2_dense.models.SSDLite` from
    :func:`mobilenetv2_dense.models.ssdlite320_mobilenet_v2`; ``post_processing`` and ``anchors`` become its
    settings, and ``loss.classification`` its score function. Its parts: the loss (:class:`SSDLoss`), the label set
    (:class:`LabelSet`) and the COCO evaluator (:class:`DetectionEvaluator`), which the joint task holds too.

    Batches follow the detection data contract: ``images (N, 3, S, S)`` normalised, ``targets`` a list of N
    dicts (``boxes (M, 4)`` xyxy input pixels, ``labels (M,)`` in 1..K, ``image_id``, ``orig_size (2,)`` = (h, w)).

    Args:
        num_classes: K, the classes the data defines: object categories (80 for COCO, 20 for VOC), background
            implicit, so the classifier has K + 1 outputs; the CLI links it from ``data.num_classes``.
        backbone: width, starting weights, random init and freezing (:class:`mobilenetv2_dense.backbone.
            BackboneSettings`, a YAML block). The detector starts from ``init: normal``, N(0, 0.03), as TF's SSDLite
            configs and torchvision's ``ssdlite320`` train from scratch.
        loss: the multibox loss (:class:`mobilenetv2_dense.heads.SSDLossSettings`, a YAML block): ``classification``
            ``"softmax"`` with hard negative mining 3:1 (the paper's SSD) or sigmoid ``"focal"`` (every object logit
            starts at RetinaNet's prior p = 0.01, so the first loss is O(1)), ``neg_pos_ratio``,
            ``min_negatives_per_image`` and ``iou_threshold``, the IoU at which an anchor becomes a positive. The
            task's default matches at 0.4, not the paper's 0.5: SSDLite's lowest map has 3 boxes per cell, and at 0.5
            many objects match no anchor but their forced best one (see the docs' train-vs-peers benchmark).
        post_processing: score threshold, top-k candidates, per-class NMS and detections kept
            (:class:`mobilenetv2_dense.heads.PostProcessing`, a YAML block), at validation, test and predict.
        evaluator: COCO evaluation backend; ``faster_coco_eval`` gives pycocotools' numbers exactly, faster.
        anchors: the default boxes (:class:`mobilenetv2_dense.heads.AnchorSettings`, a YAML block: TF's
            ``ssd_anchor_generator`` values and two options for fitted ones); the ``anchors`` command writes fitted
            ones as this block.
        fit_anchors: at the start of ``fit``, fit the anchor values to the data module's training boxes
            (:mod:`mobilenetv2_dense.tasks.detection.anchors`), print the best possible recall before and after, and
            keep the values in the hyper-parameters, so checkpoints (and ``--ckpt_path`` runs, the export command)
            build the model with them. A resumed fit keeps the checkpoint's anchors.
        optimization, channels_last, inference, qat: see :class:`mobilenetv2_dense.tasks.base.BaseTask`; an exported
            detector computes no loss, so ``validate --model.init_args.inference model.onnx`` logs the COCO metrics
            only.
    """

    task_name = "detection"

    def __init__(
        self,
        num_classes: int,
        backbone: BackboneSettings = BackboneSettings(init="normal"),
        loss: SSDLossSettings = SSDLossSettings(iou_threshold=0.4),
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
        self.num_classes = num_classes
        self.fit_anchors = fit_anchors
        self.model = ssdlite320_mobilenet_v2(
            num_classes=num_classes, **self.backbone_to_build(backbone).builder_kwargs(),
            classification=loss.classification, post_processing=post_processing, anchors=anchors)
        if loss.classification == "focal":
            self.model.head.set_class_prior(0.01)
        self.criterion = SSDLoss(loss)
        self.labels = LabelSet()
        self.evaluator = DetectionEvaluator(evaluator)

    # ----------------------------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        super().setup(stage)  # checks num_classes against the data
        self.labels.read(self.trainer.datamodule if self._trainer is not None else None)

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

    # -------------------------------------------------------------------------------------------- training
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Raw network outputs: ``bbox_regression (N, A, 4)``, ``cls_logits (N, A, K+1)``, ``anchors (A, 4)``."""
        return self.run_network(images)

    def training_step(self, batch: tuple[Tensor, list[dict]], batch_idx: int) -> Tensor:
        images, targets = batch
        losses = self.criterion(self(images), targets, self.model.box_coder)
        if (skipped := self.skip_nonfinite(losses)) is not None:
            return skipped
        size = len(targets)
        self.log("train/loss", losses["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/bbox_regression", losses["bbox_regression"], on_step=True, on_epoch=True, batch_size=size)
        self.log("train/classification", losses["classification"], on_step=True, on_epoch=True, batch_size=size)
        return losses["loss"]

    # ----------------------------------------------------------------------------------------- evaluation
    def _evaluation_step(self, batch: tuple[Tensor, list[dict]], stage: str) -> None:
        images, targets = batch
        prediction = self.backend()(images)
        # Per-image loss terms, summed over the split at its end: an exported file gives no raw outputs for them.
        loss_terms = (self.criterion.per_image(prediction["network"], targets, self.model.box_coder)
                      if "network" in prediction else None)
        detections = scale_to_original(prediction["detections"], tuple(images.shape[-2:]),
                                       [t["orig_size"] for t in targets])
        self.evaluator.update(detections, targets, self.labels.label_to_cat_id, loss_terms)

    def on_validation_epoch_start(self) -> None:
        self.evaluator.start()

    def validation_step(self, batch: tuple[Tensor, list[dict]], batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.evaluator.finish(self, "val", self.labels)

    def on_test_epoch_start(self) -> None:
        self.evaluator.start()

    def test_step(self, batch: tuple[Tensor, list[dict]], batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.evaluator.finish(self, "test", self.labels)

    # ------------------------------------------------------------------------------------------ prediction
    def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, Any]]:
        """Detections per image in original pixels: ``boxes (D, 4)`` xyxy, ``scores``, ``labels`` in 1..K,
        plus ``path``, ``image_id`` and ``orig_size`` of the image, on the CPU."""
        images, metas = split_predict_batch(batch)
        detections = scale_to_original(self.backend()(images)["detections"], tuple(images.shape[-2:]),
                                       [m["orig_size"] for m in metas])
        return [{**{k: v.cpu() for k, v in det.items()}, **meta} for det, meta in zip(detections, metas)]
