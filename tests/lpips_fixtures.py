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


def brute_force_lpips(model: LPIPS, x: torch.Tensor, y: torch.Tensor, taps: tuple[int, ...]) -> torch.Tensor:
    """LPIPS eq. (1) written out: the published input shift and scale, channel-normalized features
    after the layers at ``taps`` of ``model.features``, squared differences weighted by the linear
    heads, channel sum, spatial mean, summed over taps."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)  # LPIPS's published constants
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def features(z):
        out, feats = (z - shift) / scale, []
        for i, layer in enumerate(model.features):
            out = layer(out)
            if i in taps:
                feats.append(out / (out.norm(dim=1, keepdim=True) + 1e-10))
        return feats

    return sum(((fa - fb) ** 2 * lin.weight.view(1, -1, 1, 1)).sum(1).mean()
               for fa, fb, lin in zip(features(x), features(y), model.lins))
