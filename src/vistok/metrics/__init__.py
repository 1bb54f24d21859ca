"""Quality metrics for reconstructions: PSNR, SSIM, MS-SSIM (no weights) and LPIPS (weights from a file)."""

from vistok.metrics.perceptual import LPIPS
from vistok.metrics.quality import MS_SSIM_WEIGHTS, frame_quality, ms_ssim, psnr, ssim

__all__ = ["LPIPS", "MS_SSIM_WEIGHTS", "frame_quality", "ms_ssim", "psnr", "ssim"]
