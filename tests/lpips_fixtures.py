"""Small LPIPS networks and image pairs shared by the LPIPS tests."""

import torch

from vistok.metrics.perceptual import LPIPS


def random_lpips(net: str = "vgg", width: int = 4, seed: int = 0) -> LPIPS:
    torch.manual_seed(seed)
    model = LPIPS(net=net, width=width)
    with torch.no_grad():  # learned-looking non-negative linear weights instead of all ones
        for lin in model.lins:
            lin.weight.uniform_(0.1, 1.0)
    return model.eval()


def image_pair(shape=(2, 3, 32, 32), seed: int = 0, noise: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * 2 - 1
    return x, (x + noise * torch.randn(shape, generator=g)).clamp(-1, 1)
