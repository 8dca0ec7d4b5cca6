"""Image-quality metrics (super-resolution: PSNR and SSIM on the Y channel)."""
