"""What every task shares: the network as ``self.model``, optimisation from config, channels_last, and the inference
backend that validate, test and predict run."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Self

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from ..backbone.settings import BackboneSettings
from ..deploy.backend import ExportedBackend, NetworkBackend, check_inference, inference_backend, is_exported
from ..deploy.qat import FakeQuantizedNetwork
from . import qat as qat_stage
from .datamodule import dataset_value
from .legacy import upgraded_checkpoint
from .nonfinite import NonFiniteGuard, check_checkpoint
from .optim import Optimization, build_optimizer, build_scheduler
from .qat import QATSettings

# Set while load_from_checkpoint builds a task: its backbone weights come from the checkpoint, not backbone.weights.
_FROM_CHECKPOINT: ContextVar[bool] = ContextVar("from_checkpoint", default=False)


class BaseTask(L.LightningModule):
    """Base LightningModule. Subclasses set ``self.model`` (a plain ``nn.Module``: images -> dict of tensors).

    Args:
        optimization: optimiser, peak lr, schedule and warm-up (see
            :class:`mobilenetv2_dense.tasks.optim.Optimization`).
        channels_last: run the network in NHWC memory format (faster convolutions on recent GPUs and CPUs).
        inference: what ``validate``, ``test`` and ``predict`` run (the validations inside ``fit`` always run
            ``self.model``), through one :mod:`mobilenetv2_dense.deploy.backend`: ``"eager"`` (``self.model``),
            ``"fused"`` (a copy with every BatchNorm folded into its conv), ``"compiled"`` (that copy under
            ``torch.compile``, inductor with freezing, after checking on the first batch that no batch-norm op is
            left), or the path of an ``.onnx`` / ``.pte`` / ``.tflite`` file written by the export command, run by ONNX
            Runtime, ExecuTorch or LiteRT with the same data, metrics, pictures and files (an exported file computes
            no loss, and ``fit`` refuses it). A copy is built at the first batch of each run, from the weights the run
            evaluates.

    A training batch whose loss or gradients are not finite is skipped, ``optimization.max_nonfinite_steps`` of them
    in a row stop the run, and no checkpoint with a non-finite tensor is written (:mod:`mobilenetv2_dense.tasks.
    nonfinite`): a subclass's ``training_step`` returns :meth:`skip_nonfinite`'s loss when there is one, and its
    ``on_save_checkpoint`` calls this one.

    With a ``qat`` block (:class:`mobilenetv2_dense.tasks.qat.QATSettings`), the network trains and evaluates
    fake-quantised (:mod:`mobilenetv2_dense.tasks.qat`): subclasses run it through :meth:`run_network`.
    """

    task_name: str = ""  # the "task" of an exported file's sidecar this task can run

    def __init__(self, optimization: Optimization = Optimization(), channels_last: bool = False,
                 inference: str = "eager", qat: QATSettings | None = None) -> None:
        super().__init__()
        self.optimization = optimization
        self.channels_last = channels_last
        self.inference = check_inference(inference, type(self).__name__)
        self._backend: NetworkBackend | ExportedBackend | None = None
        self.nonfinite = NonFiniteGuard(optimization.max_nonfinite_steps)
        if qat is not None and inference in ("fused", "compiled"):
            raise ValueError(f"{type(self).__name__}: inference={inference!r} folds the float network, but qat runs "
                             "the fake-quantised one: use inference 'eager', or export the checkpoint with --int8")
        self.qat = qat
        self.qat_network: FakeQuantizedNetwork | None = None  # traced at set-up (the data gives its size)

    def setup(self, stage: str) -> None:
        self._check_data_classes(stage)
        if is_exported(self.inference) and stage == "fit":
            raise ValueError(f"{type(self).__name__}: model.init_args.inference={self.inference!r} runs an exported "
                             "file, which cannot be trained; use it with validate, test or predict, or remove it")
        if self.qat is not None and self.qat_network is None:
            if self.qat.weights is not None and not _FROM_CHECKPOINT.get():
                qat_stage.load_start_weights(self, self.qat.weights)
            self.qat_network = qat_stage.build_network(self, qat_stage.traced_size(self, self.trainer.datamodule))
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    @property
    def network(self) -> nn.Module:
        """What runs in PyTorch: ``self.model``, or its fake-quantised version under QAT (the same outputs)."""
        return self.model if self.qat_network is None else self.qat_network

    def run_network(self, images: Tensor) -> dict[str, Tensor]:
        """The network's raw outputs on a normalised batch (:attr:`network`)."""
        return self.network(self.prepare_images(images))

    def on_fit_start(self) -> None:
        """After a resumed run's state is loaded: a new QAT run calibrates its activation ranges."""
        qat_stage.calibrate(self, self.trainer.datamodule)

    def on_train_epoch_start(self) -> None:
        if self.qat_network is not None:
            qat_stage.update_freezing(self.qat_network, self.qat, self.current_epoch)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "qat" in checkpoint and self.qat_network is None:  # its fake quantisers' state loads next
            self.qat_network = qat_stage.build_network(self, tuple(checkpoint["qat"]["image_size"]))

    # ------------------------------------------------------------------------- non-finite losses and weights
    def skip_nonfinite(self, losses: dict[str, Tensor]) -> Tensor | None:
        """``None`` when every loss term is finite; else the batch is skipped and ``training_step`` returns this loss
        (zero gradients, dropped before the optimiser step). Raises at too many in a row."""
        return self.nonfinite.skip_loss(self, losses)

    def on_train_start(self) -> None:
        self.nonfinite.start()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.nonfinite.remember(self)
        if self.qat_network is not None:  # back from a validation: BatchNorms and observers in training mode again
            self.qat_network.sync_mode()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.nonfinite.check_gradients(self, optimizer)

    def on_train_end(self) -> None:
        self.nonfinite.report(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint(self, checkpoint)  # before Lightning writes the file
        qat_stage.save(self.qat_network, checkpoint)

    def backend(self) -> NetworkBackend | ExportedBackend:
        """What evaluation and prediction run: the backend ``inference`` names (made once per run; an exported file is
        loaded and checked against this task once), but ``self.model`` while training and inside ``fit``."""
        exported = is_exported(self.inference)  # never trains: fit refuses it at set-up
        if not exported and (self.training or self._trainer is None or self.trainer.state.fn == "fit"):
            return NetworkBackend(self.network, channels_last=self.channels_last)
        if self._backend is None:
            self._backend = inference_backend(self.inference, self.network, task=self.task_name,
                                              num_classes=self.num_classes,
                                              num_seg_classes=getattr(self, "num_seg_classes", None),
                                              channels_last=self.channels_last, owner=type(self).__name__)
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            if isinstance(self._backend, ExportedBackend) and hasattr(datamodule, "mean"):
                self._backend.check_normalization(datamodule.mean, datamodule.std, type(datamodule).__name__)
        return self._backend

    # Each evaluation run starts from the weights it evaluates (a --ckpt_path is loaded before these hooks); an
    # exported file keeps its loaded runtime.
    def _new_backend(self) -> None:
        if not isinstance(self._backend, ExportedBackend):
            self._backend = None

    def on_validation_model_eval(self) -> None:
        super().on_validation_model_eval()
        self._new_backend()

    def on_test_model_eval(self) -> None:
        super().on_test_model_eval()
        self._new_backend()

    def on_predict_model_eval(self) -> None:
        super().on_predict_model_eval()
        self._new_backend()

    def _check_data_classes(self, stage: str) -> None:
        """``num_classes`` (the number of classes the data's annotations define, see ``commands/cli.py``) must
        equal the data module's. The CLI links it from the data; this catches values given by hand."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        # predicting on a folder where the dataset is absent: the classes come from the checkpoint
        data_classes = dataset_value(datamodule, "num_classes") if stage == "predict" else getattr(
            datamodule, "num_classes", None)
        if data_classes is not None and data_classes != self.num_classes:
            raise ValueError(
                f"{type(self).__name__}: model.num_classes is {self.num_classes} (num_classes={self.num_classes} "
                f"but the data has {data_classes} classes: {type(datamodule).__name__} has "
                f"num_classes={data_classes}); set model.init_args.num_classes to {data_classes}, or leave it out "
                "of the config: the CLI takes it from the data module")

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Self:
        """Lightning's, but ``backbone.weights`` is not read: the checkpoint holds the trained weights, so a
        checkpoint naming torchvision's ImageNet weights or a file since gone loads offline. A checkpoint written
        before the settings blocks loads with its options read as today's blocks (:mod:`mobilenetv2_dense.tasks.
        legacy`; its tensors onto the CPU unless ``map_location`` says otherwise)."""
        upgraded = upgraded_checkpoint(checkpoint_path, cls, weights_only=kwargs.get("weights_only"))
        token = _FROM_CHECKPOINT.set(True)
        try:
            return super().load_from_checkpoint(upgraded or checkpoint_path, *args, **kwargs)
        finally:
            _FROM_CHECKPOINT.reset(token)

    @staticmethod
    def backbone_to_build(backbone: BackboneSettings) -> BackboneSettings:
        """``backbone`` as the network is built from it: without ``weights`` inside :meth:`load_from_checkpoint`."""
        return backbone.replace(weights=None) if _FROM_CHECKPOINT.get() else backbone

    def prepare_images(self, images: Tensor) -> Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def configure_optimizers(self) -> dict:
        total = max(1, int(self.trainer.estimated_stepping_batches))  # also loads the train dataloader
        config = self.optimization
        if config.reference_batch_size is not None:
            config = config.scaled(self._global_batch_size())
        optimizer = build_optimizer(self, config)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        scheduler = build_scheduler(optimizer, config, total_steps=total, steps_per_epoch=max(1, total // epochs))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _global_batch_size(self) -> int:
        """Samples per optimiser step over all processes; prints the lr it scales to (rank zero)."""
        trainer, config = self.trainer, self.optimization
        if trainer.train_dataloader is None:  # not loaded by estimated_stepping_batches when max_steps bounds the run
            trainer.fit_loop.setup_data()
        loader = trainer.train_dataloader
        per_device = getattr(loader, "batch_size", None) or getattr(getattr(loader, "batch_sampler", None),
                                                                     "batch_size", None)
        if not per_device:
            raise ValueError(
                f"optimization.reference_batch_size={config.reference_batch_size} scales the lr by the global "
                f"batch, but the train dataloader ({type(loader).__name__}) has no batch_size to read; set "
                "optimization.reference_batch_size: null and give the lr for your batch")
        batch = trainer.world_size * per_device * trainer.accumulate_grad_batches
        rank_zero_info(
            f"lr {config.scaled(batch).lr:.6g} = {config.lr:g} x global batch {batch} / reference batch "
            f"{config.reference_batch_size} (global batch = {per_device} per device x {trainer.num_devices} "
            f"device(s) x {trainer.num_nodes} node(s) x {trainer.accumulate_grad_batches} accumulated; linear "
            "scaling rule, optimization.reference_batch_size: null uses lr as given)")
        return batch
