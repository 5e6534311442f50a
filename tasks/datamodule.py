"""What every data module shares: the loader options, declared once, and the loaders built from them.

A data module takes its own arguments and forwards the rest to :class:`BaseDataModule`::

    class VOCSegmentationDataModule(BaseDataModule):
        def __init__(self, root: str = "data/voc", *, crop_size: int = 512, **loader_options: Any) -> None:
            super().__init__(**loader_options)

LightningCLI (jsonargparse) follows ``**loader_options`` into ``BaseDataModule.__init__``, so these options are
ordinary, flat keys of every data module: ``data.init_args.batch_size`` in a config, ``--data.init_args.num_workers
0`` on the command line, and listed by ``--print_config``. A subclass whose data want another default (a larger
batch for ImageNet) names that one option in its signature and passes it on.

``predict`` reads ``predict_images``: a folder, an image file, a glob or video files
(:func:`mobilenetv2_dense.datasets.images.predict_dataset`). A data module builds that dataset with
:meth:`BaseDataModule.predict_images_dataset` and its item builder (:func:`detection_predict_sample`,
:func:`segmentation_predict_sample`); the loader streams a video's frames in order and puts each frame in the batch
for the prediction writers (:class:`mobilenetv2_dense.datasets.video.FrameCollate`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import albumentations as A
import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..datasets.detection.dataset import Transform
from ..datasets.images import IMAGENET_MEAN, IMAGENET_STD, PREDICT_MAX_PIXELS, predict_dataset
from ..datasets.seeding import seeded_loader
from ..datasets.video import FrameCollate, PredictSample, VideoFrames

# Set-up messages on stdout, once under DDP (every rank runs ``setup``).
rank_zero_print = rank_zero_only(print)


def dataset_value(datamodule: Any, name: str) -> Any:
    """A value the data module reads from its dataset's files (``num_classes``, ``class_names``,
    ``label_to_cat_id``, ...), or ``None`` when there is no data module, it has no such value, or the dataset is not
    on this machine (predicting on a folder, exporting a checkpoint: the checkpoint then gives the classes).

    The data modules raise ``FileNotFoundError`` / ``ValueError`` naming the missing file; this is the one place that
    turns that into "absent" for the callers that can do without the dataset.
    """
    try:
        return getattr(datamodule, name, None)
    except (FileNotFoundError, ValueError):
        return None


def training_images(datamodule: Any, count: int) -> Iterator[Tensor]:
    """The first ``count`` images of ``datamodule``'s training loader (set up), in its batches: normalised
    ``(n, 3, H, W)``, augmented as training sees them. What int8 calibration observes (``export.py --int8``, a QAT
    run's start)."""
    seen = 0
    for batch in datamodule.train_dataloader():
        images = batch[0] if isinstance(batch, (list, tuple)) else batch["images"]
        images = images[: count - seen]
        yield images
        seen += len(images)
        if seen >= count:
            return


def _detection_sample(transform: Transform, image: np.ndarray, meta: dict[str, Any]) -> tuple[Tensor, dict]:
    image_size = torch.as_tensor(image.shape[:2], dtype=torch.int64)
    image, boxes, labels = transform(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    return image, {"boxes": boxes, "labels": labels, "image_id": int(meta["image_id"]), "orig_size": image_size,
                   "path": str(meta["path"])}


def _segmentation_sample(transform: A.Compose, image: np.ndarray, meta: dict[str, Any]) -> tuple[Tensor, str]:
    return transform(image=image)["image"], str(meta["path"])


def detection_predict_sample(transform: Transform) -> PredictSample:
    """The detection contract's predict item: ``(image (3, S, S), target)``, the target without boxes and with
    ``image_id``, ``orig_size`` ``(H, W)`` and ``path`` (``detection_collate`` batches it)."""
    return partial(_detection_sample, transform)


def segmentation_predict_sample(transform: A.Compose) -> PredictSample:
    """The segmentation contract's predict item: ``(image (3, H, W), path)`` (``predict_collate`` batches it)."""
    return partial(_segmentation_sample, transform)


def stream_video_predictions(trainer: L.Trainer) -> None:
    """For a prediction writer's ``on_predict_start``: when ``predict`` reads a video, stop the trainer from also
    returning every frame's prediction (``return_predictions``), which would hold a whole video of masks in memory;
    the writer has written each frame by then."""
    loop = trainer.predict_loop
    if isinstance(dataset_value(trainer.datamodule, "predict_dataset"), VideoFrames) and loop.return_predictions:
        loop.return_predictions = False
        rank_zero_info("predict reads a video: each frame's prediction goes to the prediction writer's files and is "
                       "not also returned (return_predictions=False), so memory does not grow with its length")


class BaseDataModule(L.LightningDataModule):
    """Loaders over the datasets a subclass builds in ``setup(stage)``: ``train_dataset``, ``val_dataset`` (also
    the test split) and ``predict_dataset``, batched by ``collate`` (``predict_collate`` for prediction).

    Every loader is a :func:`mobilenetv2_dense.datasets.seeding.seeded_loader`: augmentation is seeded from torch,
    different in every worker and epoch, identical for two runs with the same ``seed_everything``. The training
    loader shuffles and drops an incomplete last batch (BatchNorm and a tiny batch do not mix) unless the whole
    split fits in one batch.

    Args:
        batch_size: training batch per process (per GPU under DDP).
        val_batch_size: validation, test and predict batch; ``None``: ``batch_size``.
        num_workers: loader processes (0: load in the main process).
        pin_memory: page-locked batches for faster copies to the GPU; ``None``: when CUDA is available.
        persistent_workers: keep loader workers across epochs: saves their start-up, but resuming is then not exact
            (their augmentation state is in no checkpoint; see ``datasets/seeding.py``).
        mean, std: the normalisation per RGB channel, as fractions of 255 (ImageNet's, as the torchvision weights
            expect).
        strict: stop at set-up on any bad sample instead of skipping it with a warning.
    """

    collate: Callable | None = None  # batches of the train / val / test loaders (None: torch's default collate)
    predict_collate: Callable | None = None  # batches of the predict loader (None: ``collate``)

    def __init__(self, *, batch_size: int = 32, val_batch_size: int | None = None, num_workers: int = 4,
                 pin_memory: bool | None = None, persistent_workers: bool = False,
                 mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD,
                 strict: bool = False, predict_max_pixels: int | None = PREDICT_MAX_PIXELS) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.val_batch_size = batch_size if val_batch_size is None else val_batch_size
        self.num_workers, self.pin_memory, self.persistent_workers = num_workers, pin_memory, persistent_workers
        self.mean, self.std, self.strict = tuple(mean), tuple(std), strict
        self.predict_max_pixels = predict_max_pixels
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.predict_dataset: Dataset | None = None

    def loader(self, dataset: Dataset | None, *, train: bool, predict: bool = False) -> DataLoader:
        """The loader of ``dataset``: shuffled training batches (``train``) or evaluation batches in order."""
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() for this stage before asking for its loader")
        batch_size = self.batch_size if train else self.val_batch_size
        collate = (self.predict_collate or self.collate) if predict else self.collate
        num_workers = self.num_workers
        if isinstance(dataset, VideoFrames):  # one process decodes the stream in order, ahead of the model
            collate, num_workers = FrameCollate(collate), min(num_workers, 1)
        pin_memory = torch.cuda.is_available() if self.pin_memory is None else self.pin_memory
        return seeded_loader(dataset, batch_size=batch_size, shuffle=train, num_workers=num_workers,
                             collate_fn=collate, pin_memory=pin_memory,
                             drop_last=train and len(dataset) > batch_size,
                             persistent_workers=self.persistent_workers and num_workers > 0)

    def predict_images_dataset(self, source: str | None, sample: PredictSample) -> Dataset:
        """The ``predict`` dataset of ``source`` (the ``predict_images`` option: a folder, an image file, a glob or
        video files), items built by ``sample`` (:func:`detection_predict_sample`, :func:`segmentation_predict_sample`)
        from each image at its working size (``predict_max_pixels``); see
        :func:`mobilenetv2_dense.datasets.images.predict_dataset`. A video's frames are one ordered stream, so a
        run on several devices is refused for them."""
        if source is None:
            raise ValueError(f"{type(self).__name__}: predict needs predict_images: a folder of images, an image "
                             "file, a glob such as 'photos/*.jpg' or a video file")
        dataset = predict_dataset(source, sample, strict=self.strict, max_pixels=self.predict_max_pixels)
        world_size = self.trainer.world_size if self.trainer is not None else 1
        if isinstance(dataset, VideoFrames) and world_size > 1:
            raise ValueError(f"{type(self).__name__}: predict_images={source!r} is video, whose frames one process "
                             f"reads in order, but the run has {world_size} processes; predict it with "
                             "--trainer.devices 1 --trainer.num_nodes 1")
        return dataset

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.val_dataset, train=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.val_dataset, train=False)  # the test split is the validation split

    def predict_dataloader(self) -> DataLoader:
        return self.loader(self.predict_dataset, train=False, predict=True)
