"""Two nodes of one process each, through ``torchrun`` and ``train_task.py`` as a cluster runs them (DDP on gloo):
each "node" has its own working folder, as machines without a shared disk have their own ``runs/``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.deploy.runs import QUIET
from tests.tasks.test_preemption import CONFIG, ROOT, child_env, tiny

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


class DumpWeights(L.Callback):
    """Each rank writes ``weights_rank<global rank>.pt`` (its ranks and its model's state) when fit ends."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.save({"world_size": trainer.world_size, "node_rank": trainer.node_rank, "step": trainer.global_step,
                    "parameters": dict(pl_module.named_parameters()), "state": pl_module.state_dict()},
                   f"weights_rank{trainer.global_rank}.pt")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # ~30 s: two torchrun launchers and two training processes start on 2 cores
def test_two_nodes_end_with_the_same_weights_and_only_rank_0_writes_checkpoints(tiny_shapes_folder, tmp_path):
    port = free_port()
    fit = [str(ROOT / "train_task.py"), "fit", "--config", CONFIG, *tiny(tiny_shapes_folder, epochs=1),
           "--trainer.num_nodes", "2", "--trainer.devices", "1", "--trainer.accelerator", "cpu",
           "--trainer.strategy", "ddp", "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0",
           *QUIET,
           "--trainer.callbacks+=tests.tasks.test_multinode.DumpWeights"]  # importable from ROOT
    nodes = [tmp_path / f"node{rank}" for rank in range(2)]
    children = []
    for rank, folder in enumerate(nodes):
        folder.mkdir()
        launcher = [TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank),
                    "--master_addr", "127.0.0.1", "--master_port", str(port)]
        children.append(subprocess.Popen([*launcher, *fit], cwd=folder, env=child_env(), start_new_session=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        outputs = [child.communicate(timeout=240)[0].decode() for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
    assert [child.returncode for child in children] == [0, 0], "\n\n".join(out[-3000:] for out in outputs)

    dumps = [torch.load(folder / f"weights_rank{rank}.pt") for rank, folder in enumerate(nodes)]
    assert [(d["world_size"], d["node_rank"]) for d in dumps] == [(2, 0), (2, 1)]
    assert dumps[0]["step"] == dumps[1]["step"] == 2  # 16 images, batch 4, split over 2 ranks: 2 steps each
    # DDP averages the gradients: every rank takes the same steps. Batch-norm running statistics are each rank's
    # own (rank 0's are broadcast at every forward, and the checkpoint keeps rank 0's): not compared.
    for name, tensor in dumps[0]["parameters"].items():
        assert torch.equal(tensor, dumps[1]["parameters"][name]), f"{name} differs between the nodes"

    assert not list(nodes[1].rglob("*.ckpt")), "a rank other than 0 wrote a checkpoint"
    last = next(nodes[0].rglob("last.ckpt"))
    saved = torch.load(last, weights_only=False)
    assert saved["global_step"] == 2
    for name, tensor in dumps[0]["state"].items():
        assert torch.equal(tensor, saved["state_dict"][name]), f"{name} of last.ckpt is not rank 0's"
