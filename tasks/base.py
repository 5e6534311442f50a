"""What every task shares: the network as ``self.model``, optimisation from config, channels_last."""

from __future__ import annotations

from typing import Any, Literal, Self

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from .datamodule import dataset_value
from .optim import Optimization, build_optimizer, build_scheduler


class BaseTask(L.LightningModule):
    """Base LightningModule. Subclasses set ``self.model`` (a plain ``nn.Module``: images -> dict of tensors).

    Args:
        optimization: optimiser, peak lr, schedule and warm-up (see
        :class:`mobilenetv2_dense.tasks.optim.Optimization`).
        channels_last: run the network in NHWC memory format (faster convolutions on recent GPUs and CPUs).
        deployed: an exported ``.onnx`` or ``.pte`` file (``export.py``) that ``validate``, ``test`` and ``predict``
            run through its runtime instead of the PyTorch network, with the same data, metrics, pictures and
            files; ``fit`` refuses it.
        inference: the network ``validate``, ``test`` and ``predict`` runs (the validations inside ``fit`` always
            run ``self.model``): ``"eager"`` (``self.model``), ``"fused"`` (a copy with every BatchNorm folded
            into its conv, :func:`mobilenetv2_dense.deploy.fuse.fold_conv_bn`) or ``"compiled"`` (that copy under
            ``torch.compile``, inductor with freezing, after checking on the first batch that no batch-norm op is
            left, :func:`mobilenetv2_dense.deploy.fuse.compile_for_inference`). Built at the first batch of each
            run, from the weights the run evaluates.
    """

    task_name: str = ""  # the "task" of an exported file's sidecar this task can run

    def __init__(self, optimization: Optimization = Optimization(), channels_last: bool = False,
                 deployed: str | None = None, inference: Literal["eager", "fused", "compiled"] = "eager") -> None:
        super().__init__()
        if inference not in ("eager", "fused", "compiled"):
            raise ValueError(f"{type(self).__name__}: inference must be 'eager', 'fused' or 'compiled', "
                             f"got {inference!r}")
        self.optimization = optimization
        self.channels_last = channels_last
        self.deployed = deployed
        self.inference = inference
        self._deployed_model: Any = None
        self._inference_network: nn.Module | None = None

    def setup(self, stage: str) -> None:
        self._check_data_classes(stage)
        if self.deployed is not None and stage == "fit":
            raise ValueError(f"{type(self).__name__}: model.init_args.deployed={self.deployed!r} runs an exported "
                             "file, which cannot be trained; use it with validate, test or predict, or remove it")
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def run_network(self, images: Tensor) -> dict[str, Tensor]:
        """``self.model(images)``, or during ``validate`` / ``test`` / ``predict`` the ``inference`` network."""
        if self.inference == "eager" or self.training or self._trainer is None or self.trainer.state.fn == "fit":
            return self.model(images)
        if self._inference_network is None:
            from ..deploy.fuse import compile_for_inference, fold_conv_bn

            self._inference_network = (fold_conv_bn(self.model) if self.inference == "fused" else
                                       compile_for_inference(self.model, example=images))
        return self._inference_network(images)

    # Each evaluation run starts from the weights it evaluates (a --ckpt_path is loaded before these hooks).
    def on_validation_model_eval(self) -> None:
        super().on_validation_model_eval()
        self._inference_network = None

    def on_test_model_eval(self) -> None:
        super().on_test_model_eval()
        self._inference_network = None

    def on_predict_model_eval(self) -> None:
        super().on_predict_model_eval()
        self._inference_network = None

    @property
    def deployed_model(self) -> Any:
        """The :class:`mobilenetv2_dense.deploy.runtime.DeployedModel` of ``deployed`` (loaded once), checked
        against this task's kind and class count."""
        if self._deployed_model is None:
            from ..deploy.runtime import DeployedModel  # onnxruntime / executorch only when used

            model = DeployedModel(self.deployed)
            if model.task != self.task_name or len(model.meta["classes"]) != self.num_classes:
                raise ValueError(
                    f"{type(self).__name__}: {self.deployed} is a {model.task} model of "
                    f"{len(model.meta['classes'])} classes, this task a {self.task_name} of {self.num_classes}; "
                    "pass the config the file was exported from")
            self._deployed_model = model
        return self._deployed_model

    def deployed_inputs(self, images: Tensor) -> Tensor:
        """A normalised batch back to the ``[0, 1]`` RGB an exported graph takes (it normalises inside)."""
        from ..deploy.graph import denormalize

        return denormalize(images, self.trainer.datamodule.mean, self.trainer.datamodule.std)

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
        """Lightning's, but ``backbone_weights`` is not loaded (unless given): the checkpoint holds the trained
        weights, so a checkpoint naming torchvision's ImageNet weights or a file since gone loads offline."""
        kwargs.setdefault("backbone_weights", None)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

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
