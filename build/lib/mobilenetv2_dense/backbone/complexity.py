"""Model cost as papers report it: parameters and multiply-adds (MAdds = FLOPs / 2) of one forward pass."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_madds(model: nn.Module, input_size: tuple[int, int], *, batch: int = 1) -> int:
    """Multiply-adds of convolutions and linear layers for one ``(batch, 3, H, W)`` input, eval mode.

    Counted by ``torch.utils.flop_counter`` (2 FLOPs per multiply-add), as the paper counts: norm layers,
    activations, pooling and resizing are left out.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(batch, 3, *input_size, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2 // batch
