"""A physical cast-shadow simulator: (shadow image, shadow mask, exact shadow-free image) triplets.

It stands in for ISTD-style shadow-removal data (Wang et al., CVPR 2018), which cannot be installed
offline, in the HQSS reproduction (Zhong et al., "HQSS: high-quality pseudo shadow synthesis",
arXiv 2212.04108; docs/methods/hqss.md). The method under test never sees the simulator's
parameters: it learns from the shadow images and masks it produces, and the held-out test triplets
(with their exact shadow-free targets) come from photos of another split.

Image formation (in linear light; photos are sRGB-encoded, so they are linearised first). A surface
of reflectance rho lit by a direct source E_d (sunlight, yellowish) and an ambient source E_a (sky,
bluish) has radiance ``rho (E_d + E_a)``. An occluder blocking a fraction ``alpha`` of the direct
light leaves ``rho (E_a + (1 - alpha) E_d)``, so per channel c

    shadowed_c = lit_c * (1 - alpha * (1 - k_c)),   k_c = E_a,c / (E_d,c + E_a,c)

``k_c`` is the ambient fraction: what a full shadow keeps. Because the ambient light is bluer than the
direct light, ``k_b > k_g > k_r`` and a shadow is darker *and* bluer than the lit surface.

* Occluders: random star-shaped polygons, ellipses, bars (poles, beams) or unions of two or three of
  them, placed so the shadow covers a random fraction of the image (possibly cut by the border).
* Penumbra: ``alpha = Phi(d / sigma(x))`` with ``d`` the signed distance (pixels, positive inside) to
  the occluder's outline and ``Phi`` the normal CDF (the blur of a hard edge by a Gaussian light-source
  footprint). ``sigma`` varies per image and grows linearly across the image along a random direction
  (a penumbra widens with the occluder-to-surface distance). ``alpha`` is set exactly to 0 / 1 beyond
  three sigmas, so pixels far from the shadow are left bit-identical.
* Strength varies per image (the ambient-to-direct ratio and the tint) and across the shadow: the
  occluder transmits a smoothly varying fraction of the direct light (``alpha`` times
  ``1 - v * noise(x)``, ``noise`` a bicubic-upsampled coarse random grid in [0, 1]).
* Mask: ``alpha_geometric > 0.5`` (the umbra and inner half of the penumbra), as annotated masks are.
* The shadow image is rounded to 8-bit levels where it changed (a camera stores 8-bit images).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from squeeze.errors import SqueezeError

SHAPES = ("polygon", "ellipse", "bar", "compound")
# Colour of the direct (sun) and ambient (sky) light, per RGB channel, before the per-image tint.
_DIRECT_TINT = np.array([1.0, 0.0, -1.0])  # direct light: + red, - blue, scaled by tint / 2
_AMBIENT_TINT = np.array([-1.0, 0.0, 1.0])  # ambient light: - red, + blue, scaled by tint


@dataclass(frozen=True)
class ShadowParams:
    """Ranges the simulator draws from (uniformly), one draw per image.

    Attributes:
        area: fraction of the image inside the shadow mask.
        ambient: ``k_g``, the fraction of the lit (linear) green radiance a full shadow keeps; 0.08-0.4
            keeps about 0.3-0.65 of the sRGB value, roughly the darkness of ISTD's shadows.
        tint: blue shift of the ambient relative to the direct light (0 = grey shadows).
        penumbra: penumbra sigma as a fraction of the image's short side.
        spread: how much the penumbra sigma grows across the image (sigma x (1 + spread * ramp)).
        variation: ``v``, the largest fraction of the shadow's strength removed by the occluder's
            varying transmission.
        shapes: occluder kinds to draw from (:data:`SHAPES`).
    """

    area: tuple[float, float] = (0.08, 0.45)
    ambient: tuple[float, float] = (0.08, 0.4)
    tint: tuple[float, float] = (0.15, 0.5)
    penumbra: tuple[float, float] = (0.008, 0.04)
    spread: tuple[float, float] = (0.0, 2.0)
    variation: tuple[float, float] = (0.0, 0.35)
    shapes: tuple[str, ...] = SHAPES

    def __post_init__(self) -> None:
        checks = {"area": (0.0, 1.0), "ambient": (0.0, 1.0), "tint": (0.0, 0.9), "penumbra": (0.0, 0.5),
                  "spread": (0.0, 10.0), "variation": (0.0, 1.0)}
        for name, (lo, hi) in checks.items():
            a, b = getattr(self, name)
            if not lo <= a <= b <= hi:
                raise SqueezeError(f"shadow simulator range {name}=({a}, {b}) must satisfy {lo} <= low <= high <= {hi}")
        if self.area[0] <= 0 or self.area[1] >= 1:
            raise SqueezeError(f"shadow area range {self.area} must lie strictly inside (0, 1)")
        bad = [s for s in self.shapes if s not in SHAPES]
        if bad or not self.shapes:
            raise SqueezeError(f"unknown occluder shape(s) {bad or '(none given)'}; use some of {', '.join(SHAPES)}")


@dataclass
class ShadowSample:
    """One simulated triplet plus what made it (tensors on the CPU, float in [0, 1]).

    ``image`` (3, H, W) the shadow image; ``mask`` (1, H, W) in {0, 1}; ``target`` (3, H, W) the exact
    shadow-free image; ``matte`` (1, H, W) the geometric occlusion alpha; ``strength`` (1, H, W) the
    effective alpha after the varying transmission; ``ambient`` (3,) the ambient fractions k_c.
    """

    image: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor
    matte: torch.Tensor
    strength: torch.Tensor
    ambient: torch.Tensor

    def as_tuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(shadow image, mask, shadow-free target)``."""
        return self.image, self.mask, self.target


# ---------------------------------------------------------------------------------------------------
# pure physics


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB decoding of values in [0, 1]."""
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB encoding of linear values in [0, 1]."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def ambient_fractions(k_green: float, tint: float) -> torch.Tensor:
    """Per-channel ambient fraction ``k_c = E_a,c / (E_d,c + E_a,c)`` (3,), with ``k_g = k_green``.

    Direct light colour ``1 + tint/2 * (1, 0, -1)``, ambient colour ``r * (1 + tint * (-1, 0, 1))`` with
    ``r`` the ambient-to-direct ratio that makes the green fraction ``k_green``; so ``k_b > k_g > k_r``
    whenever ``tint > 0``.
    """
    if not 0 < k_green < 1 or not 0 <= tint < 1:
        raise SqueezeError(f"ambient fraction {k_green} must be in (0, 1) and tint {tint} in [0, 1)")
    direct = 1.0 + 0.5 * tint * _DIRECT_TINT
    ratio = k_green / (1.0 - k_green)
    ambient = ratio * (1.0 + tint * _AMBIENT_TINT)
    return torch.tensor(ambient / (direct + ambient), dtype=torch.float32)


def apply_shadow(clean: torch.Tensor, strength: torch.Tensor, ambient: torch.Tensor,
                 quantize: bool = True) -> torch.Tensor:
    """Cast a shadow on an sRGB image: ``lit * (1 - strength * (1 - k_c))`` in linear light.

    ``clean`` (3, H, W) in [0, 1]; ``strength`` (1, H, W) in [0, 1] (fraction of direct light blocked);
    ``ambient`` (3,) the k_c. Pixels with ``strength == 0`` are returned unchanged (bit-identical);
    the others are rounded to 8-bit levels when ``quantize``.
    """
    factor = 1.0 - strength * (1.0 - ambient.view(3, 1, 1))  # (3, H, W)
    shadowed = linear_to_srgb(srgb_to_linear(clean) * factor)
    if quantize:
        shadowed = shadowed.mul(255).round().div(255)
    return torch.where(strength > 0, shadowed, clean)


def penumbra_matte(signed_distance: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``alpha = Phi(d / sigma)`` (normal CDF), exactly 0 / 1 beyond three sigmas; same shape as ``d``."""
    z = signed_distance / sigma.clamp_min(1e-6)
    alpha = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    return torch.where(z <= -3, torch.zeros_like(alpha), torch.where(z >= 3, torch.ones_like(alpha), alpha))


def polygon_signed_distance(vertices: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Signed distance (H, W) in pixels from pixel centres to a closed polygon (positive inside).

    ``vertices`` (V, 2) as (x, y) pixel coordinates. Inside-ness by the even-odd crossing rule;
    distance = the nearest point on any edge.
    """
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    p = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)[:, None, :]  # (P, 1, 2)
    a = vertices.double()[None]  # (1, V, 2)
    b = torch.roll(vertices.double(), -1, 0)[None]
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    dist = (p - (a + t[..., None] * ab)).norm(dim=-1).min(dim=1).values  # (P,)
    py, ay, by = p[..., 1], a[..., 1], b[..., 1]
    straddle = (ay > py) != (by > py)
    x_cross = a[..., 0] + (py - ay) * ab[..., 0] / torch.where(ab[..., 1] == 0, torch.ones_like(ay), ab[..., 1])
    inside = ((straddle & (p[..., 0] < x_cross)).sum(1) % 2) == 1
    return torch.where(inside, dist, -dist).reshape(h, w).float()


def smooth_noise(h: int, w: int, rng: np.random.Generator, cells: int = 4) -> torch.Tensor:
    """A smooth random field (H, W) spanning [0, 1] exactly: a bicubic upsample of a coarse uniform grid."""
    grid = torch.from_numpy(rng.uniform(0, 1, (1, 1, cells, cells))).float()
    field = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)[0, 0]
    lo, hi = field.min(), field.max()
    return (field - lo) / (hi - lo).clamp_min(1e-6)


# ---------------------------------------------------------------------------------------------------
# random occluders


def _star_polygon(rng: np.random.Generator, cx: float, cy: float, radius: float) -> np.ndarray:
    n = int(rng.integers(3, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.45, 1.0, n)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)


def _ellipse(rng: np.random.Generator, cx: float, cy: float, radius: float) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    a, b, rot = radius, radius * rng.uniform(0.3, 1.0), rng.uniform(0, np.pi)
    x, y = a * np.cos(t), b * np.sin(t)
    return np.stack([cx + x * np.cos(rot) - y * np.sin(rot), cy + x * np.sin(rot) + y * np.cos(rot)], 1)


def _bar(rng: np.random.Generator, cx: float, cy: float, radius: float) -> np.ndarray:
    length, half = 3.0 * radius, radius * rng.uniform(0.12, 0.35)
    rot = rng.uniform(0, np.pi)
    u, v = np.array([np.cos(rot), np.sin(rot)]), np.array([-np.sin(rot), np.cos(rot)])
    corners = [(-length, -half), (length, -half), (length, half), (-length, half)]
    return np.array([[cx, cy] + s * u + q * v for s, q in corners])


def occluder_distance(h: int, w: int, rng: np.random.Generator, shapes: tuple[str, ...]) -> torch.Tensor:
    """Signed distance (H, W) to one random occluder's shadow outline (a union is the max of its parts)."""
    kind = shapes[int(rng.integers(len(shapes)))]
    simple = ("polygon", "ellipse", "bar")
    parts = [simple[int(rng.integers(3))] for _ in range(int(rng.integers(2, 4)))] if kind == "compound" else [kind]
    side = min(h, w)
    dist = None
    for part in parts:
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        radius = side * rng.uniform(0.15, 0.5)
        verts = {"polygon": _star_polygon, "ellipse": _ellipse, "bar": _bar}[part](rng, cx, cy, radius)
        d = polygon_signed_distance(torch.from_numpy(verts), h, w)
        dist = d if dist is None else torch.maximum(dist, d)
    assert dist is not None
    return dist


def _penumbra_sigma(h: int, w: int, rng: np.random.Generator, params: ShadowParams) -> torch.Tensor:
    """Per-pixel penumbra sigma (H, W): ``s0 * (1 + spread * ramp)``, ramp in [0, 1] along a random direction."""
    s0 = rng.uniform(*params.penumbra) * min(h, w)
    theta = rng.uniform(0, 2 * np.pi)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    ramp = xs * math.cos(theta) + ys * math.sin(theta)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min()).clamp_min(1e-6)
    return s0 * (1.0 + rng.uniform(*params.spread) * ramp)


def _occluder_matte(h: int, w: int, rng: np.random.Generator, params: ShadowParams,
                    tries: int = 200) -> torch.Tensor:
    """A geometric matte (H, W) whose mask (> 0.5) covers a fraction of the image inside ``params.area``."""
    lo, hi = params.area
    best, best_gap = None, math.inf
    for _ in range(tries):
        alpha = penumbra_matte(occluder_distance(h, w, rng, params.shapes), _penumbra_sigma(h, w, rng, params))
        frac = float((alpha > 0.5).float().mean())
        gap = 0.0 if lo <= frac <= hi else min(abs(frac - lo), abs(frac - hi))
        if gap == 0.0:
            return alpha
        if gap < best_gap and frac > 0:
            best, best_gap = alpha, gap
    if best is None:
        raise SqueezeError(f"could not place an occluder covering {lo:.2f}..{hi:.2f} of a {w}x{h} image; "
                           "widen the area range or use a larger image")
    return best


def simulate_shadow(clean: torch.Tensor, rng: np.random.Generator | int,
                    params: ShadowParams | None = None) -> ShadowSample:
    """Cast one random shadow on ``clean`` (3, H, W) in [0, 1]; deterministic in ``rng`` (or a seed)."""
    params = params or ShadowParams()
    if clean.ndim != 3 or clean.shape[0] != 3:
        raise SqueezeError(f"expected a clean RGB image shaped (3, H, W), got {tuple(clean.shape)}")
    h, w = clean.shape[1:]
    if min(h, w) < 8:
        raise SqueezeError(f"image of {w}x{h} px is too small to cast a shadow on; use at least 8x8")
    if not torch.isfinite(clean).all() or clean.min() < 0 or clean.max() > 1:
        raise SqueezeError("clean image values must be finite and in [0, 1]")
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    clean = clean.float().cpu()
    matte = _occluder_matte(h, w, rng, params)[None]  # (1, H, W)
    variation = rng.uniform(*params.variation)
    strength = matte * (1.0 - variation * smooth_noise(h, w, rng)[None])
    ambient = ambient_fractions(rng.uniform(*params.ambient), rng.uniform(*params.tint))
    image = apply_shadow(clean, strength, ambient)
    return ShadowSample(image, (matte > 0.5).float(), clean.clone(), matte, strength, ambient)


def shadow_triplets(clean: torch.Tensor, seed: int,
                    params: ShadowParams | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shadow every image of ``clean`` (N, 3, H, W): ``(images, masks (N, 1, H, W), targets)``, seeded."""
    if clean.ndim != 4 or clean.shape[0] < 1:
        raise SqueezeError(f"expected a batch of clean images (N, 3, H, W), got {tuple(clean.shape)}")
    rng = np.random.default_rng(seed)
    samples = [simulate_shadow(img, rng, params) for img in clean]
    return (torch.stack([s.image for s in samples]), torch.stack([s.mask for s in samples]),
            torch.stack([s.target for s in samples]))


def photo_shadow_triplets(split: str, n: int, size: int, seed: int,
                          params: ShadowParams | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` simulated triplets on ``size``-px crops of the offline photos of ``split`` (train/val/test)."""
    from squeeze.data.photos import photo_crops  # noqa: PLC0415

    return shadow_triplets(photo_crops(split, n, size, seed), seed + 1, params)
