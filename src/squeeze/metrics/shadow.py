"""Shadow-removal metrics: errors in CIELab on the shadow / non-shadow / whole image, and RGB PSNR.

Shadow-removal papers (Guo et al. 2012; ISTD, Wang et al. CVPR 2018; G2R-ShadowNet; HQSS, Zhong et al.
arXiv 2212.04108) report an "RMSE" in Lab colour space. The evaluation script the ISTD line of work
shares (MATLAB: ``applycform(img, makecform('srgb2lab'))`` on 8-bit images resized to 256x256) actually
computes a **mean absolute error**: per image, the absolute L, a and b differences are *summed over the
three channels* and averaged over the pixels of the region; the per-image values are then averaged
over the test set ("per-image" Lab MAE). This module provides both:

* :func:`lab_mae` - that literature convention (what the papers' tables call RMSE; the numbers
  HQSS reports, e.g. 8.48 / 2.82 / 3.72 on ISTD, are of this kind). The ``rmse_*`` rows of
  ``squeeze bench hqss`` use it, so they read like the papers' columns.
* :func:`lab_rmse` - a true root-mean-square error: ``sqrt(mean over region pixels of
  (dL^2 + da^2 + db^2))`` (the RMS of the CIE76 colour difference), reported alongside.

Conversion (:func:`rgb_to_lab`): sRGB (IEC 61966-2-1) -> linear -> CIE XYZ with the sRGB/D65 matrix
-> CIELab relative to the D65 white (0.95047, 1.0, 1.08883), which is what scikit-image's
``skimage.color.rgb2lab`` computes. MATLAB's ``makecform('srgb2lab')`` adapts to a D50 white instead,
so absolute values differ slightly from the papers' scripts; squeeze does not resize to 256x256 either
(its test images are small). Inputs are rounded to 8-bit levels first, as saved PNGs would be.
"""
from __future__ import annotations

import math

import torch

from squeeze.errors import SqueezeError

# sRGB (linear) -> XYZ, D65 (IEC 61966-2-1; the matrix scikit-image uses)
XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
D65_WHITE = (0.95047, 1.0, 1.08883)
_EPS = 0.008856  # (6/29)^3: below it the cube root is replaced by a line
_KAPPA = 7.787  # slope of that line ((29/6)^2 / 3)


def _channels_first(img: torch.Tensor, what: str) -> None:
    if img.ndim < 3 or img.shape[-3] != 3:
        raise SqueezeError(f"{what}: expected RGB images shaped (..., 3, H, W), got {tuple(img.shape)}")


def rgb_to_lab(img: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> CIELab (D65), (..., 3, H, W) -> (..., 3, H, W); differentiable; L in [0, 100]."""
    _channels_first(img, "rgb_to_lab")
    x = img.clamp(0, 1)
    lin = torch.where(x > 0.04045, ((x + 0.055) / 1.055).clamp_min(1e-12) ** 2.4, x / 12.92)
    m = torch.tensor(XYZ_FROM_RGB, dtype=img.dtype, device=img.device)
    xyz = torch.einsum("ij,...jhw->...ihw", m, lin)
    white = torch.tensor(D65_WHITE, dtype=img.dtype, device=img.device).view(3, 1, 1)
    t = xyz / white
    f = torch.where(t > _EPS, t.clamp_min(1e-12) ** (1 / 3), _KAPPA * t + 16 / 116)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_lab` (clamped to [0, 1]); (..., 3, H, W)."""
    _channels_first(lab, "lab_to_rgb")
    L, a, b = lab.unbind(-3)
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=-3)
    t = torch.where(f > 6 / 29, f ** 3, (f - 16 / 116) / _KAPPA)
    white = torch.tensor(D65_WHITE, dtype=lab.dtype, device=lab.device).view(3, 1, 1)
    m_inv = torch.linalg.inv(torch.tensor(XYZ_FROM_RGB, dtype=torch.float64)).to(lab.dtype).to(lab.device)
    lin = torch.einsum("ij,...jhw->...ihw", m_inv, t * white).clamp(0, 1)
    srgb = torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(1e-12) ** (1 / 2.4) - 0.055, 12.92 * lin)
    return srgb.clamp(0, 1)


def _prepare(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check one (3, H, W) pair and its (1, H, W) / (H, W) mask; returns (Lab difference (3,H,W), bool mask)."""
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[0] != 3:
        raise SqueezeError(f"output {tuple(pred.shape)} and shadow-free target {tuple(target.shape)} must both be "
                           "(3, H, W) of the same shape")
    m = mask[0] if mask.ndim == 3 else mask
    if m.shape != pred.shape[-2:]:
        raise SqueezeError(f"shadow mask of {tuple(m.shape)} does not match the image's {tuple(pred.shape[-2:])}; "
                           "give the mask of this image at the same size")
    m = m > 0.5
    if not m.any() or m.all():
        raise SqueezeError("the shadow mask is " + ("empty" if not m.any() else "all shadow") + "; the shadow and "
                           "non-shadow errors need both regions (check the mask file)")
    q = [x.double().clamp(0, 1).mul(255).round().div(255) for x in (pred, target)]  # as saved 8-bit images
    return rgb_to_lab(q[0]) - rgb_to_lab(q[1]), m


def lab_mae(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Literature "RMSE" of one image: mean over region pixels of ``|dL| + |da| + |db|``.

    Returns ``{"shadow", "nonshadow", "all"}``; ``mask`` marks the shadow region (values > 0.5).
    """
    diff, m = _prepare(pred, target, mask)
    per_pixel = diff.abs().sum(0)  # (H, W)
    return {"shadow": float(per_pixel[m].mean()), "nonshadow": float(per_pixel[~m].mean()),
            "all": float(per_pixel.mean())}


def lab_rmse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """True RMSE of one image: ``sqrt(mean over region pixels of dL^2 + da^2 + db^2)``; same keys."""
    diff, m = _prepare(pred, target, mask)
    sq = diff.pow(2).sum(0)
    return {"shadow": math.sqrt(float(sq[m].mean())), "nonshadow": math.sqrt(float(sq[~m].mean())),
            "all": math.sqrt(float(sq.mean()))}


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """RGB PSNR (dB, data range 1) of one (3, H, W) pair after 8-bit rounding; ``inf`` when identical."""
    if pred.shape != target.shape:
        raise SqueezeError(f"output {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    q = [x.double().clamp(0, 1).mul(255).round().div(255) for x in (pred, target)]
    mse = float((q[0] - q[1]).pow(2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def shadow_scores(preds: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """Per-image averages over a test set (N, 3, H, W) / masks (N, 1, H, W).

    Keys: ``rmse_shadow``, ``rmse_nonshadow``, ``rmse_all`` (the literature Lab MAE, see module
    docstring), ``true_rmse_shadow``, ``true_rmse_nonshadow``, ``true_rmse_all`` and ``psnr``.
    """
    if preds.ndim != 4 or preds.shape[0] == 0 or masks.ndim != 4 or len(masks) != len(preds):
        raise SqueezeError(f"expected (N, 3, H, W) outputs with (N, 1, H, W) masks, got {tuple(preds.shape)} and "
                           f"{tuple(masks.shape)}")
    sums: dict[str, float] = {}
    for p, t, m in zip(preds, targets, masks):
        vals = {f"rmse_{k}": v for k, v in lab_mae(p, t, m).items()}
        vals.update({f"true_rmse_{k}": v for k, v in lab_rmse(p, t, m).items()})
        vals["psnr"] = psnr(p, t)
        for k, v in vals.items():
            sums[k] = sums.get(k, 0.0) + v
    return {k: v / len(preds) for k, v in sums.items()}
