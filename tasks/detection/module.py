"""SSDLite training, COCO evaluation and prediction as a LightningModule (paper section 6.2).

One validation pass computes the loss and the detections; the detections are mapped back to original
image pixels, gathered over ranks and scored once per epoch with COCOeval against ``datamodule.val_coco``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from ...heads.anchors import AnchorSettings
from ...heads.loss import SSDLoss, SSDLossSettings
from ...heads.postprocess import PostProcessing
from ...models.ssdlite import ssdlite320_mobilenet_v2
from ..base import BaseTask
from ..datamodule import dataset_value
from ..distributed import gather_per_image
from ..optim import Optimization
from ..plots import evaluation_folder
from .anchors import fit_task_anchors
from .evaluation import (
    METRIC_NAMES,
    detections_to_array,
    evaluate_coco,
    scale_to_original,
)
from .pictures import write_detection_pictures

LOGGED_METRICS = (*METRIC_NAMES, "mar_100")


class DetectionTask(BaseTask):
    """SSDLite on a MobileNetV2 backbone: training, COCO mAP, prediction in original pixels.

    The network is ``self.model``, a :class:`mobilenetv2_dense.models.SSDLite` from
    :func:`mobilenetv2_dense.models.ssdlite320_mobilenet_v2`; ``post_processing`` and ``anchors`` become its
    settings, and ``loss.classification`` its score function.

    Batches follow the detection data contract: ``images (N, 3, S, S)`` normalised, ``targets`` a list of N
    dicts (``boxes (M, 4)`` xyxy input pixels, ``labels (M,)`` in 1..K, ``image_id``, ``orig_size (2,)`` = (h, w)).

    Args:
        num_classes: K, the classes the data defines: object categories (80 for COCO, 20 for VOC), background
            implicit, so the classifier has K + 1 outputs; the CLI links it from ``data.num_classes``.
        width_mult: MobileNetV2 width multiplier.
        backbone_weights: a local MobileNetV2 state_dict to start from (``None``: random init).
        backbone_init: the backbone's random init without ``backbone_weights``: ``"normal"``, N(0, 0.03) as TF's
            SSDLite configs and torchvision's ``ssdlite320`` train from scratch, or ``"kaiming"``, torchvision's
            classification init (see ``benchmarks/train_vs_peers.py`` for what each learns). ``normal`` relies on
            batch norm normalising each layer: ``norm_eval`` on random weights wants ``kaiming``.
        frozen_stages: freeze the stem and the first ``frozen_stages`` stages (``-1``: train everything).
        norm_eval: freeze the running statistics of every backbone BatchNorm (for batches too small to estimate
            them, starting from ``backbone_weights``); held during ``fit`` however training starts.
        loss: the multibox loss (:class:`mobilenetv2_dense.heads.SSDLossSettings`, a YAML block): ``classification``
            ``"softmax"`` with hard negative mining 3:1 (the paper's SSD) or sigmoid ``"focal"`` (every object logit
            starts at RetinaNet's prior p = 0.01, so the first loss is O(1)), ``neg_pos_ratio``,
            ``min_negatives_per_image`` and ``iou_threshold``, the IoU at which an anchor becomes a positive. The
            task's default matches at 0.4, not the paper's 0.5: SSDLite's lowest map has 3 boxes per cell, and at 0.5
            many objects match no anchor but their forced best one; trained from scratch that way ours learned far
            slower than torchvision's SSDLite (``benchmarks/train_vs_peers.py``).
        post_processing: score threshold, top-k candidates, per-class NMS and detections kept
            (:class:`mobilenetv2_dense.heads.PostProcessing`, a YAML block), at validation, test and predict.
        evaluator: COCO evaluation backend; ``faster_coco_eval`` gives pycocotools' numbers exactly, faster.
        anchors: the default boxes (:class:`mobilenetv2_dense.heads.AnchorSettings`, a YAML block: TF's
            ``ssd_anchor_generator`` values and two options for fitted ones); the ``anchors`` command writes fitted
            ones as this block.
        fit_anchors: at the start of ``fit``, fit the anchor values to the data module's training boxes
            (:mod:`mobilenetv2_dense.tasks.detection.anchors`), print the best possible recall before and after, and
            keep the values in the hyper-parameters, so checkpoints (and ``--ckpt_path`` runs, ``export.py``) build
            the model with them. A resumed fit keeps the checkpoint's anchors.
        optimization, channels_last, deployed, inference: see :class:`mobilenetv2_dense.tasks.base.BaseTask`; an
            exported detector computes no loss, so ``validate --model.init_args.deployed model.onnx`` logs the COCO
            metrics only.
    """

    task_name = "detection"

    def __init__(
        self,
        num_classes: int,
        width_mult: float = 1.0,
        backbone_weights: str | None = None,
        backbone_init: Literal["normal", "kaiming"] = "normal",
        frozen_stages: int = -1,
        norm_eval: bool = False,
        loss: SSDLossSettings = SSDLossSettings(iou_threshold=0.4),
        post_processing: PostProcessing = PostProcessing(),
        evaluator: Literal["faster_coco_eval", "pycocotools"] = "faster_coco_eval",
        anchors: AnchorSettings = AnchorSettings(),
        fit_anchors: bool = False,
        optimization: Optimization = Optimization(),
        channels_last: bool = False,
        deployed: str | None = None,
        inference: Literal["eager", "fused", "compiled"] = "eager",
    ) -> None:
        super().__init__(optimization=optimization, channels_last=channels_last, deployed=deployed,
                         inference=inference)
        self.save_hyperparameters()
        self.num_classes = num_classes
        self.evaluator = evaluator
        self.model = ssdlite320_mobilenet_v2(
            num_classes=num_classes, width_mult=width_mult, backbone_weights=backbone_weights,
            backbone_init=backbone_init, frozen_stages=frozen_stages, norm_eval=norm_eval,
            classification=loss.classification,
            post_processing=post_processing, anchors=anchors)
        if loss.classification == "focal":
            self.model.head.set_class_prior(0.01)
        self.criterion = SSDLoss(loss)
        # Names of labels 1..K and label -> category id: from the data module at set-up, else from the checkpoint.
        self.class_names: list[str] | None = None
        self.label_to_cat_id: dict[int, int] | None = None
        # Per evaluation epoch: the (D, 7) COCO results arrays and the image ids seen on this rank.
        self._results: list[np.ndarray] = []
        self._image_ids: set[int] = set()

    # ----------------------------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        super().setup(stage)  # checks num_classes against the data
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        # Without the dataset (predicting on a folder) the names and ids come from the checkpoint.
        names, cat_ids = dataset_value(datamodule, "class_names"), dataset_value(datamodule, "label_to_cat_id")
        if names is not None:
            self.class_names = [str(name) for name in names]
        if cat_ids is not None:
            self.label_to_cat_id = {int(label): int(cat) for label, cat in cat_ids.items()}

    def on_fit_start(self) -> None:
        if self.hparams.get("fit_anchors", False):  # a subclass without the option never fits
            fit_task_anchors(self)

    # The label set travels in the checkpoint, so predict needs no dataset to name classes and map ids back.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["class_names"], checkpoint["label_to_cat_id"] = self.class_names, self.label_to_cat_id

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The data module's label set (set up before the checkpoint is restored) wins when it has one.
        self.class_names = self.class_names or checkpoint.get("class_names")
        self.label_to_cat_id = self.label_to_cat_id or checkpoint.get("label_to_cat_id")

    # -------------------------------------------------------------------------------------------- training
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Raw network outputs: ``bbox_regression (N, A, 4)``, ``cls_logits (N, A, K+1)``, ``anchors (A, 4)``."""
        return self.run_network(self.prepare_images(images))

    def training_step(self, batch: tuple[Tensor, list[dict]], batch_idx: int) -> Tensor:
        images, targets = batch
        losses = self.criterion(self(images), targets, self.model.box_coder)
        size = len(targets)
        self.log("train/loss", losses["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/bbox_regression", losses["bbox_regression"], on_step=True, on_epoch=True, batch_size=size)
        self.log("train/classification", losses["classification"], on_step=True, on_epoch=True, batch_size=size)
        return losses["loss"]

    # ----------------------------------------------------------------------------------------- evaluation
    def detect(self, outputs: dict[str, Tensor], input_size: tuple[int, int],
               orig_sizes: list[Tensor] | Tensor) -> list[dict[str, Tensor]]:
        """Post-processed detections per image (:meth:`mobilenetv2_dense.models.SSDLite.postprocess`), boxes xyxy
        in original image pixels."""
        return scale_to_original(self.model.postprocess(outputs, input_size), input_size, orig_sizes)

    def deployed_detect(self, images: Tensor, orig_sizes: list[Tensor] | Tensor) -> list[dict[str, Tensor]]:
        """:meth:`detect` through the exported file of ``deployed``: same detections, original pixels."""
        model = self.deployed_model
        size = tuple(images.shape[-2:])
        if list(size) != model.meta["input"]["image_size"]:
            raise ValueError(f"DetectionTask: {self.deployed} was exported for {model.meta['input']['image_size']} "
                             f"inputs, the data gives {list(size)}; set data.init_args.image_size to match or export "
                             "again with --image_size")
        return scale_to_original(model.detections(self.deployed_inputs(images)), size, orig_sizes)

    def _evaluation_step(self, batch: tuple[Tensor, list[dict]], prefix: str) -> None:
        images, targets = batch
        if self.deployed is not None:
            self._collect(self.deployed_detect(images, [t["orig_size"] for t in targets]), targets)
            return
        outputs = self(images)
        losses = self.criterion(outputs, targets, self.model.box_coder)
        self.log(f"{prefix}/loss", losses["loss"], on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=len(targets))
        self._collect(self.detect(outputs, tuple(images.shape[-2:]), [t["orig_size"] for t in targets]), targets)

    def _collect(self, detections: list[dict[str, Tensor]], targets: list[dict]) -> None:
        """Keep one batch's detections (original pixels) as COCO results for the end-of-epoch evaluation."""
        image_ids = [int(t["image_id"]) for t in targets]
        # An image met twice on this rank (sampler padding) must not count its detections twice.
        fresh = [i for i, image_id in enumerate(image_ids) if image_id not in self._image_ids]
        self._image_ids.update(image_ids[i] for i in fresh)
        label_to_cat_id = getattr(self.trainer.datamodule, "label_to_cat_id", None)
        self._results.append(detections_to_array([detections[i] for i in fresh], [image_ids[i] for i in fresh],
                                                 label_to_cat_id))

    def _reset(self) -> None:
        self._results, self._image_ids = [], set()

    def _gather(self) -> tuple[np.ndarray, list[int]]:
        """Every rank's results on every rank, each image once: a DistributedSampler pads with repeats."""

        local = np.concatenate(self._results) if self._results else np.zeros((0, 7))
        results, seen = gather_per_image(local, dict.fromkeys(sorted(self._image_ids)))
        return results, sorted(seen)

    def _evaluate(self, prefix: str) -> None:
        datamodule = self.trainer.datamodule
        coco_gt = getattr(datamodule, f"{prefix}_coco", None)  # the test split is the val split unless given
        if coco_gt is None:
            coco_gt = getattr(datamodule, "val_coco", None)
        if coco_gt is None:
            raise AttributeError(
                f"DetectionTask: {type(datamodule).__name__} has no val_coco; COCO "
                "evaluation needs the ground truth as a pycocotools COCO object (see COCODataModule.val_coco)")
        results, image_ids = self._gather()
        self._reset()
        values = torch.zeros(len(LOGGED_METRICS), dtype=torch.float64)
        if self.trainer.is_global_zero:
            rank_zero_info(f"COCO {prefix} evaluation on {len(image_ids)} images, {len(results)} detections")
            evaluating = self.trainer.state.fn != "fit"  # validate / test: COCO's table and the pictures
            metrics, evaluator = evaluate_coco(coco_gt, results, backend=self.evaluator, image_ids=image_ids,
                                               verbose=evaluating, return_eval=True)  # a fit's log gets the metrics
            folder = evaluation_folder(self.trainer) if evaluating else None  # None: no logger, no files
            if folder is not None:
                paths = write_detection_pictures(folder, evaluator, coco_gt, results, image_ids, self.class_names,
                                                 self.label_to_cat_id)
                rank_zero_info("Pictures: " + ", ".join(str(path) for path in paths))
            values = torch.tensor([metrics[name] for name in LOGGED_METRICS], dtype=torch.float64)
        # Rank 0 computed them; every rank must log the same values for checkpointing on val/map.
        values = self.trainer.strategy.broadcast(values, src=0)
        for name, value in zip(LOGGED_METRICS, values.tolist()):
            self.log(f"{prefix}/{name}", value, prog_bar=name == "map", sync_dist=False, rank_zero_only=False)

    def on_validation_epoch_start(self) -> None:
        self._reset()

    def validation_step(self, batch: tuple[Tensor, list[dict]], batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._evaluate("val")

    def on_test_epoch_start(self) -> None:
        self._reset()

    def test_step(self, batch: tuple[Tensor, list[dict]], batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._evaluate("test")

    # ------------------------------------------------------------------------------------------ prediction
    def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, Any]]:
        """Detections per image in original pixels: ``boxes (D, 4)`` xyxy, ``scores``, ``labels`` in 1..K,
        plus ``path``, ``image_id`` and ``orig_size`` of the image, on the CPU."""
        images, metas = _split_predict_batch(batch)
        orig_sizes = [m["orig_size"] for m in metas]
        detections = (self.deployed_detect(images, orig_sizes) if self.deployed is not None else
                      self.detect(self(images), tuple(images.shape[-2:]), orig_sizes))
        return [{**{k: v.cpu() for k, v in det.items()}, **meta} for det, meta in zip(detections, metas)]


def _split_predict_batch(batch: Any) -> tuple[Tensor, list[dict[str, Any]]]:
    """``(images, per-image dicts with path, image_id, orig_size)`` from a predict batch.

    Accepts the detection contract's ``(images, targets)`` (targets carrying ``path``) and the image-folder
    form ``{"images", "paths", "sizes"}``.
    """
    if isinstance(batch, dict):
        images = batch["images"]
        sizes = batch.get("orig_sizes", batch.get("sizes"))
        ids = batch.get("image_ids", [-1] * len(images))
        metas = [{"path": str(p), "image_id": int(i), "orig_size": torch.as_tensor(s)}
                 for p, i, s in zip(batch["paths"], ids, sizes)]
        return images, metas
    images, targets = batch
    metas = [{"path": str(t.get("path", t.get("file_name", ""))), "image_id": int(t.get("image_id", -1)),
              "orig_size": torch.as_tensor(t["orig_size"])} for t in targets]
    return images, metas
