"""The backbone in another Lightning project, through the public API only (docs/backbone.md)."""

import lightning as L
import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from mobilenetv2_dense.backbone import mobilenet_v2


class FPNLiteNeck(nn.Module):
    """A neck built from ``feature_info`` alone: 1x1 lateral to ``width``, top-down sum."""

    def __init__(self, channels: list[int], width: int = 32) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.smooth = Conv2dNormActivation(width, width, 3)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](features[-1])
        for lateral, feature in zip(reversed(self.lateral[:-1]), reversed(features[:-1])):
            x = lateral(feature) + nn.functional.interpolate(x, size=feature.shape[-2:], mode="nearest")
        return self.smooth(x)


class OtherProjectModule(L.LightningModule):
    """What another project writes: a counting regressor on three levels of a frozen-stem backbone."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = mobilenet_v2(width_mult=0.35, out_features=["stage3", "stage5", "stage7"], frozen_stages=2)
        self.neck = FPNLiteNeck(self.backbone.out_feature_info.channels())
        self.head = nn.Conv2d(32, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = list(self.backbone(x).values())
        return self.head(self.neck(features)).mean(dim=(1, 2, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.01)


def test_backbone_trains_inside_another_lightning_module(tmp_path):
    module = OtherProjectModule()
    frozen_before = {k: v.clone() for k, v in module.backbone.state_dict().items()
                     if k.startswith(("stem", "stages.0", "stages.1"))}
    trainable_before = module.backbone.stages[4][0].project[0].weight.clone()
    x = torch.randn(8, 3, 64, 64)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.randn(8)), batch_size=4)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module, data)
    after = module.backbone.state_dict()
    for key, value in frozen_before.items():
        torch.testing.assert_close(after[key], value, msg=f"frozen {key} changed")  # weights and BN statistics
    assert not torch.equal(module.backbone.stages[4][0].project[0].weight, trainable_before)
    assert module.neck.lateral[0].in_channels == module.backbone.feature_info.get("stage3")["num_chs"]
