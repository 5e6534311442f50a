"""SSDLite detection + DeepLabv3-lite segmentation on one MobileNetV2 as a LightningModule.

A :class:`~mobilenetv2_dense.tasks.detection.DetectionTask` whose network also segments: the detection side
(SSD loss, COCO evaluation with its DDP gather and ``label_to_cat_id``, the label set in the checkpoint, deployed
detections, predict batches) is the detection task's own; this module adds the segmentation loss and one
validation that computes both metric sets from one forward pass per batch: ``val/map*`` and ``val/miou``,
``val/pixel_accuracy`` (:class:`~mobilenetv2_dense.tasks.segmentation.metrics.SegmentationMetrics`, scored at
each image's original size as the segmentation task scores).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from ...heads.anchors import AnchorSettings
from ...heads.deeplab import label_map
from ...heads.loss import SSDLossSettings
from ...heads.postprocess import PostProcessing
from ...models.joint import ssdlite_deeplabv3_mobilenet_v2
from ..datamodule import dataset_value
from ..detection.evaluation import scale_to_original
from ..detection.module import DetectionTask, _split_predict_batch
from ..optim import Optimization
from ..segmentation.evaluation import SegmentationEvaluator
from ..segmentation.metrics import IGNORE_INDEX, PixelMean
from .loss import JointLoss, logits_by_size


class JointTask(DetectionTask):
    """SSDLite + DeepLabv3-lite on one backbone (:func:`mobilenetv2_dense.models.ssdlite_deeplabv3_mobilenet_v2`):
    training on both losses, COCO mAP and mIoU in one validation, prediction of boxes and masks.

    Batches follow the joint contract (``datasets/joint/dataset.py``): the detection batch, each target with a
    ``mask`` (labels 0..K_seg-1, 255 void) at the input size in training and at the original size in evaluation.

    Logs ``train/loss`` (the weighted sum), ``train/detection_loss`` (with ``train/bbox_regression``,
    ``train/classification``), ``train/segmentation_loss`` (with ``train/ce``, and ``train/dice`` when weighted);
    after each validation ``val/loss``, ``val/detection_loss``, ``val/segmentation_loss`` (cross-entropy per
    labelled pixel), the detection task's ``val/map`` ... ``val/mar_100``, ``val/miou`` and ``val/pixel_accuracy``
    (``test/...`` likewise), and prints the per-class IoU table.

    Args:
        num_classes: K object classes of the detector; the CLI links it from ``data.num_classes``.
        num_seg_classes: K_seg segmentation classes, background included; ``None``: ``num_classes + 1``, what every
            joint data module defines (the background, then the detector's classes), checked against
            ``data.num_seg_classes`` at set-up.
        width_mult: MobileNetV2 width multiplier.
        decoder: add the DeepLabv3+ decoder on a finer feature (the head alone sits at output stride 32).
        decoder_feature: the backbone feature the decoder refines with: ``stage2`` (stride 4), ``stage3`` (8) or the
            detector's tap ``stage6_expansion`` (16; the cheapest, see README "Joint detection + segmentation").
        backbone_weights, frozen_stages, norm_eval: as :class:`~mobilenetv2_dense.tasks.detection.DetectionTask`.
        detection_weight, segmentation_weight: the two losses' weights in ``train/loss``.
        dice_weight: add ``dice_weight *`` smp's multiclass Dice to the segmentation cross-entropy (0: off).
        loss, post_processing, evaluator: the detector's, see :class:`~mobilenetv2_dense.tasks.detection.DetectionTask`;
            ``loss`` matches anchors at the paper's IoU 0.5 by default, the setting ``benchmarks/joint.py``
            measured the joint model with.
        anchors, fit_anchors: the detector's anchors (:class:`mobilenetv2_dense.heads.AnchorSettings`) and the step
            that fits them to the training boxes at the start of ``fit``, as
            :class:`~mobilenetv2_dense.tasks.detection.DetectionTask`'s (the ``anchors`` command takes a joint config
            too).
        optimization, channels_last, deployed, inference: see :class:`mobilenetv2_dense.tasks.base.BaseTask`;
            ``deployed`` takes a file exported from this task with logits (not ``--argmax``), and computes no loss.
    """

    task_name = "joint"

    def __init__(
        self,
        num_classes: int,
        num_seg_classes: int | None = None,
        width_mult: float = 1.0,
        decoder: bool = False,
        decoder_feature: str = "stage2",
        backbone_weights: str | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        detection_weight: float = 1.0,
        segmentation_weight: float = 1.0,
        dice_weight: float = 0.0,
        loss: SSDLossSettings = SSDLossSettings(),
        post_processing: PostProcessing = PostProcessing(),
        evaluator: Literal["faster_coco_eval", "pycocotools"] = "faster_coco_eval",
        anchors: AnchorSettings = AnchorSettings(),
        fit_anchors: bool = False,
        optimization: Optimization = Optimization(),
        channels_last: bool = False,
        deployed: str | None = None,
        inference: Literal["eager", "fused", "compiled"] = "eager",
    ) -> None:
        num_seg_classes = num_classes + 1 if num_seg_classes is None else num_seg_classes
        if not 2 <= num_seg_classes <= IGNORE_INDEX:
            raise ValueError(f"JointTask: num_seg_classes must be in 2..255 (background included, 255 is void), "
                             f"got {num_seg_classes}")
        # The detection task sets up the detector's side (loss, label set, COCO evaluation state, fit_anchors); its
        # network is replaced by the joint one below (the detector built there costs ~0.1 s and is dropped).
        super().__init__(num_classes=num_classes, width_mult=width_mult, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, loss=loss, post_processing=post_processing, evaluator=evaluator,
                         anchors=anchors, fit_anchors=fit_anchors, optimization=optimization,
                         channels_last=channels_last, deployed=deployed, inference=inference)
        self.save_hyperparameters()  # this signature's arguments (replacing the detection task's)
        self.num_seg_classes = num_seg_classes
        self.model = ssdlite_deeplabv3_mobilenet_v2(
            num_classes=num_classes, num_seg_classes=num_seg_classes, width_mult=width_mult, decoder=decoder,
            decoder_feature=decoder_feature, backbone_weights=backbone_weights, frozen_stages=frozen_stages,
            norm_eval=norm_eval,
            classification=loss.classification, post_processing=post_processing, anchors=anchors)
        if loss.classification == "focal":
            self.model.head.set_class_prior(0.01)
        self.joint_loss = JointLoss(self.criterion, detection_weight=detection_weight,
                                    segmentation_weight=segmentation_weight, dice_weight=dice_weight)
        self.seg_class_names: list[str] | None = None
        # Per evaluation stage: the segmentation scores and loss (the segmentation task's evaluator), the detection
        # loss per image.
        stages = ("val", "test")
        self.seg_evaluators = nn.ModuleDict({stage: SegmentationEvaluator(num_seg_classes) for stage in stages})
        self.det_losses = nn.ModuleDict({stage: PixelMean() for stage in stages})
        self.last_scores: dict[str, dict[str, Tensor]] = {}  # the last epoch's segmentation scores per stage

    def setup(self, stage: str) -> None:
        super().setup(stage)  # num_classes against the data, the detector's label set
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_seg_classes = dataset_value(datamodule, "num_seg_classes")
        names = dataset_value(datamodule, "seg_class_names")
        if data_seg_classes is not None and data_seg_classes != self.num_seg_classes:
            raise ValueError(
                f"JointTask: model.num_seg_classes is {self.num_seg_classes} but {type(datamodule).__name__} has "
                f"num_seg_classes={data_seg_classes}; set model.init_args.num_seg_classes to {data_seg_classes}, or "
                "leave it out of the config: the CLI takes it from the data module")
        if names is not None and len(names) == self.num_seg_classes:
            self.seg_class_names = [str(name) for name in names]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # the detector's label set
        if self.seg_class_names is None and self.class_names is not None:  # predicting without the dataset
            self.seg_class_names = ["background", *self.class_names]

    @property
    def deployed_model(self) -> Any:
        model = super().deployed_model  # checks the task and the detector's classes
        if len(model.meta.get("seg_classes", [])) != self.num_seg_classes or "seg_logits" not in model.output_names:
            raise ValueError(f"JointTask: {self.deployed} has {len(model.meta.get('seg_classes', []))} segmentation "
                             f"classes and outputs {model.output_names}; this task needs {self.num_seg_classes} "
                             "classes and seg_logits: export it from this config without --argmax")
        return model

    # -------------------------------------------------------------------------------------------- training
    def training_step(self, batch: tuple[Tensor, list[dict]], batch_idx: int) -> Tensor:
        images, targets = batch
        losses = self.joint_loss(self(images), targets, self.model.box_coder)
        size = len(targets)
        self.log("train/loss", losses["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        for name in ("detection", "segmentation"):
            self.log(f"train/{name}_loss", losses[name], on_step=True, on_epoch=True, batch_size=size)
        for name in ("bbox_regression", "classification", "ce", "dice"):
            if name in losses:
                self.log(f"train/{name}", losses[name], on_step=True, on_epoch=True, batch_size=size)
        return losses["loss"]

    # ------------------------------------------------------------------------------------------ evaluation
    def _evaluation_step(self, batch: tuple[Tensor, list[dict]], prefix: str) -> None:
        """Detections into the COCO results (the detection task's), masks into the segmentation scores."""
        images, targets = batch
        input_size, orig_sizes = tuple(images.shape[-2:]), [t["orig_size"] for t in targets]
        if self.deployed is not None:
            model = self.deployed_model
            if list(input_size) != model.meta["input"]["image_size"]:
                raise ValueError(f"JointTask: {self.deployed} was exported for {model.meta['input']['image_size']} "
                                 f"inputs, the data gives {list(input_size)}; set data.init_args.image_size to match "
                                 "or export again with --image_size")
            outputs = model(self.deployed_inputs(images))
            self._collect(scale_to_original(model.detections_from(outputs), input_size, orig_sizes), targets)
            self._score_masks(outputs["seg_logits"].to(images.device), targets, prefix)
            return
        outputs = self(images)
        detection = self.criterion(outputs, targets, self.model.box_coder)["loss"]
        self.det_losses[prefix].update(detection * len(targets), len(targets))
        self._collect(self.detect(outputs, input_size, orig_sizes), targets)
        self._score_masks(outputs["out"], targets, prefix)

    def _score_masks(self, logits: Tensor, targets: list[dict], prefix: str) -> None:
        """Segmentation scores and cross-entropy at each image's mask size (a DistributedSampler's repeats left
        out, as the detection results leave them out)."""
        loaders = self.trainer.val_dataloaders if prefix == "val" else self.trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        evaluator = self.seg_evaluators[prefix]
        keep = [i for i, kept in enumerate(evaluator.keep(loader, len(targets))) if kept]
        if not keep:
            return
        masks = [targets[i]["mask"] for i in keep]
        for members, chosen in logits_by_size(logits[keep], [mask.shape for mask in masks]):
            evaluator.update(chosen.log_softmax(1), torch.stack([masks[i] for i in members]).to(chosen.device))

    def _finish(self, prefix: str) -> None:
        self._evaluate(prefix)  # COCO metrics (the detection task's)
        # The pictures get a seg_ prefix beside the detector's (_evaluate's confusion matrix).
        _, segmentation = self.seg_evaluators[prefix].finish(self, prefix, self.seg_class_names, pictures="seg_",
                                                             loss_name="segmentation_loss")
        det_loss = self.det_losses[prefix]
        if self.deployed is None:  # an exported detector gives no raw outputs to compute its loss on
            detection = det_loss.compute()
            weights = self.joint_loss
            self.log(f"{prefix}/detection_loss", detection)
            self.log(f"{prefix}/loss",
                     weights.detection_weight * detection + weights.segmentation_weight * segmentation)
        det_loss.reset()

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self.seg_evaluators["val"].start()

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.seg_evaluators["test"].start()

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    # ------------------------------------------------------------------------------------------ prediction
    def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, Any]]:
        """Per image the detection task's prediction (``boxes`` in original pixels, ``scores``, ``labels``, ``path``,
        ``image_id``, ``orig_size``) plus ``mask``: ``(h, w)`` uint8 labels at the original size; on the CPU."""
        images, metas = _split_predict_batch(batch)
        input_size, orig_sizes = tuple(images.shape[-2:]), [m["orig_size"] for m in metas]
        if self.deployed is not None:
            outputs = self.deployed_model(self.deployed_inputs(images))
            detections = scale_to_original(self.deployed_model.detections_from(outputs), input_size, orig_sizes)
            logits = outputs["seg_logits"]
        else:
            outputs = self(images)
            detections, logits = self.detect(outputs, input_size, orig_sizes), outputs["out"]
        masks: list[Tensor | None] = [None] * len(metas)
        for members, chosen in logits_by_size(logits, [tuple(size.tolist()) for size in orig_sizes]):
            for i, mask in zip(members, label_map(chosen).to(torch.uint8).cpu()):
                masks[i] = mask
        return [{**{k: v.cpu() for k, v in det.items()}, **meta, "mask": mask}
                for det, meta, mask in zip(detections, metas, masks)]
