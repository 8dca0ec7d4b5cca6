"""Physical screen-capture moire: photograph a photo shown on an LCD with a Bayer-sensor camera.

Stand-in for the real moire data sets UnDeM (Zhang et al., "Learning Image Demoireing from Unpaired Real
Data", AAAI 2024) trains and tests on (FHDMi, UHDM), which cannot be installed offline. The moire here is
real aliasing, produced by image formation, not an overlay:

1. **Display.** Each pixel of the clean sRGB photo is one screen pixel (pitch 1 in screen units) emitting
   linear light ``I ** 2.2`` through three vertical colour stripes (R, G, B, each a third of the pixel
   wide, narrowed by ``fill_u``) and a black matrix between pixel rows (``fill_v``). Stripe radiance is
   scaled so that a pixel's mean radiance is ``I ** 2.2``.
2. **Camera pose.** Sensor pixel ``x`` (unit pitch) sees screen point ``u = H(x)``: a homography made of
   a scale ``q`` (screen pixels per sensor pixel, the ratio of sensor pitch to the imaged screen
   pitch), a small rotation ``angle``, a small perspective tilt and a shift.
3. **Optics and sensor.** The radiance is supersampled ``supersample`` x ``supersample`` times per
   sensor pixel, blurred by a Gaussian lens PSF (``blur``, in sensor pixels) and integrated over each
   pixel's area, then sampled through an RGGB Bayer colour filter (phase ``bayer``), with signal-
   dependent (shot) and constant (read) Gaussian noise.
4. **Processing.** Bilinear demosaicing, white balance, exposure, a camera gamma, 8-bit quantization.

Screen-pitch periodic structure at ``q`` cycles per sensor pixel cannot be represented by the sensor's
unit sampling, so it folds back to the beat frequencies :func:`beat_frequencies` predicts: coloured bands
whose period and orientation depend on ``q`` and the angle. With ``q = 1`` and no rotation each sensor
pixel integrates exactly one whole screen pixel, the stripes average out, and there is no moire.

The clean **target** is the same geometric mapping of the clean photo with no sub-pixel structure,
lens blur, CFA, noise or colour processing (area-integrated, sRGB-encoded), so it is aligned with the
capture pixel for pixel, as FHDMi's targets are aligned with their photos.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from squeeze.errors import SqueezeError

DISPLAY_GAMMA = 2.2
MIN_SIDE = 16  # smallest clean image the simulator accepts (px)


@dataclass(frozen=True)
class MoireParams:
    """One capture's physical parameters (see the module docstring for each step).

    Attributes:
        q: screen pixels per sensor pixel (sensor pitch / screen pitch imaged on the sensor).
        angle: camera roll relative to the screen, degrees.
        persp_x, persp_y: perspective tilt (relative depth change across half the frame).
        shift_u, shift_v: sub-pixel offset of the screen grid, screen pixels.
        fill_u: lit fraction of each colour stripe's width; fill_v: lit fraction of a pixel row's height.
        blur: lens PSF standard deviation, sensor pixels.
        aperture: side of each sensor pixel's light-collecting area as a fraction of the pitch (a
            fill factor below 1, as with microlenses, lets more screen-pitch contrast reach the samples).
        bayer: RGGB phase, 0..3 (which corner of the 2x2 tile is red).
        shot, read: noise standard deviations: ``sqrt(shot**2 * signal + read**2)`` (linear units).
        exposure, wb: global gain and per-channel white-balance gains (R, G, B).
        gamma: camera encoding gamma (output = linear ** (1 / gamma)).
        crop: fraction of the screen (divided by q) the sensor covers, keeps the frame inside the photo.
        supersample: radiance samples per sensor pixel along each axis.
    """

    q: float = 1.1
    angle: float = 3.0
    persp_x: float = 0.0
    persp_y: float = 0.0
    shift_u: float = 0.0
    shift_v: float = 0.0
    fill_u: float = 0.9
    fill_v: float = 0.85
    blur: float = 0.3
    aperture: float = 0.7
    bayer: int = 0
    shot: float = 0.0
    read: float = 0.0
    exposure: float = 1.0
    wb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = DISPLAY_GAMMA
    crop: float = 0.85
    supersample: int = 6

    def __post_init__(self) -> None:
        if not 0.3 <= self.q <= 3.0:
            raise SqueezeError(f"moire q={self.q} (screen pixels per sensor pixel) must be in [0.3, 3]")
        if not (0 < self.fill_u <= 1 and 0 < self.fill_v <= 1):
            raise SqueezeError(f"moire fill_u={self.fill_u}, fill_v={self.fill_v} must be in (0, 1]")
        if self.blur < 0 or self.shot < 0 or self.read < 0 or self.exposure <= 0 or self.gamma <= 0:
            raise SqueezeError("moire blur, shot and read must be >= 0; exposure and gamma > 0")
        if self.bayer not in (0, 1, 2, 3) or self.supersample < 1 or not 0.1 <= self.crop <= 1.0:
            raise SqueezeError("moire bayer must be 0..3, supersample >= 1 and crop in [0.1, 1]")
        if not 0.1 <= self.aperture <= 1.0:
            raise SqueezeError(f"moire aperture={self.aperture} must be in [0.1, 1]")
        if len(self.wb) != 3 or min(self.wb) <= 0:
            raise SqueezeError(f"moire wb={self.wb} must be three positive gains")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class MoireRanges:
    """Uniform ranges :func:`sample_params` draws each capture's parameters from (``(low, high)``)."""

    q: tuple[float, float] = (0.72, 1.35)
    angle: tuple[float, float] = (-8.0, 8.0)
    persp: tuple[float, float] = (-0.06, 0.06)
    fill_u: tuple[float, float] = (0.7, 1.0)
    fill_v: tuple[float, float] = (0.7, 0.95)
    blur: tuple[float, float] = (0.15, 0.45)
    aperture: tuple[float, float] = (0.5, 0.85)
    shot: tuple[float, float] = (0.0, 0.02)
    read: tuple[float, float] = (0.0, 0.004)
    exposure: tuple[float, float] = (0.85, 1.1)
    wb: tuple[float, float] = (0.9, 1.1)
    gamma: tuple[float, float] = (2.0, 2.5)


def sample_params(rng: np.random.Generator, ranges: MoireRanges = MoireRanges(), supersample: int = 6) -> MoireParams:
    """Draw one capture's parameters uniformly from ``ranges`` (``q`` avoids the moire-free 1 +- 0.02)."""
    def u(r: tuple[float, float]) -> float:
        return float(rng.uniform(r[0], r[1]))

    q = u(ranges.q)
    while abs(q - 1.0) < 0.02:
        q = u(ranges.q)
    return MoireParams(q=q, angle=u(ranges.angle), persp_x=u(ranges.persp), persp_y=u(ranges.persp),
                       shift_u=float(rng.uniform(0, 1)), shift_v=float(rng.uniform(0, 1)), fill_u=u(ranges.fill_u),
                       fill_v=u(ranges.fill_v), blur=u(ranges.blur), aperture=u(ranges.aperture), bayer=int(rng.integers(4)),
                       shot=u(ranges.shot), read=u(ranges.read), exposure=u(ranges.exposure),
                       wb=(u(ranges.wb), u(ranges.wb), u(ranges.wb)), gamma=u(ranges.gamma), supersample=supersample)


def beat_frequencies(screen_pitch: float, sensor_pitch: float, angle_deg: float, harmonics: int = 2,
                     sampling_period: float = 1.0) -> np.ndarray:
    """Predicted moire (beat) frequencies of a screen grid photographed by a sensor grid.

    The screen's pixel lattice (pitch ``screen_pitch`` as imaged on the sensor, rotated by
    ``angle_deg``) has periodic structure at ``k * q`` cycles per sensor pixel along its two axes,
    ``q = sensor_pitch / screen_pitch``, for harmonics ``k = 1..harmonics``. Sampling with period
    ``sampling_period`` sensor pixels (1 for the full grid, 2 for one Bayer colour plane) folds each
    frequency ``f`` to ``f - round(f * T) / T``, inside the sampling's Nyquist band. Returns an
    array (2 * harmonics, 2) of ``(fx, fy)`` in cycles per sensor pixel: rows ``2(k-1)`` (stripe /
    column axis) and ``2(k-1) + 1`` (row axis). A result of (0, 0) means that component folds to DC
    (no visible moire), as for ``q = 1`` at zero rotation.
    """
    if screen_pitch <= 0 or sensor_pitch <= 0 or sampling_period <= 0 or harmonics < 1:
        raise SqueezeError("beat_frequencies: pitches and sampling period must be positive, harmonics >= 1")
    q = sensor_pitch / screen_pitch
    t = math.radians(angle_deg)
    # u = q * R x: a grating with 1 cycle per screen pixel along u (or v) has frequency q * (row of R).
    axes = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    out = []
    for k in range(1, harmonics + 1):
        for axis in axes:
            f = k * q * axis
            out.append(f - np.round(f * sampling_period) / sampling_period)
    return np.array(out)


def _sensor_grid(h: int, w: int, ss: int, aperture: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Supersample points relative to the frame centre: x, y each (h*ss, w*ss), in sensor pixels.

    Pixel ``i`` gets ``ss`` points spread evenly over its light-collecting aperture (width
    ``aperture``, centred on ``i + 0.5``).
    """
    def axis(n: int) -> torch.Tensor:
        sub = ((torch.arange(ss, dtype=torch.float32) + 0.5) / ss - 0.5) * aperture  # offsets inside a pixel
        return ((torch.arange(n, dtype=torch.float32)[:, None] + 0.5 + sub[None]).reshape(-1)) - n / 2

    return torch.meshgrid(axis(w), axis(h), indexing="xy")


def screen_coords(p: MoireParams, out_hw: tuple[int, int], screen_hw: tuple[int, int],
                  aperture: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen coordinates (u, v) seen by every supersample of an ``out_hw`` sensor, each (h*ss, w*ss).

    ``aperture`` overrides ``p.aperture`` (the clean target integrates over whole pixels).
    """
    h, w = out_hw
    x, y = _sensor_grid(h, w, p.supersample, p.aperture if aperture is None else aperture)
    t = math.radians(p.angle)
    wgt = 1.0 + p.persp_x * x / (w / 2) + p.persp_y * y / (h / 2)  # homogeneous divisor (camera tilt)
    u = p.q * (math.cos(t) * x - math.sin(t) * y) / wgt + screen_hw[1] / 2 + p.shift_u
    v = p.q * (math.sin(t) * x + math.cos(t) * y) / wgt + screen_hw[0] / 2 + p.shift_v
    return u, v


def display_radiance(lin: torch.Tensor, u: torch.Tensor, v: torch.Tensor, p: MoireParams,
                     stripes: bool = True) -> torch.Tensor:
    """Linear radiance (3, *u.shape) of the screen showing ``lin`` (3, H, W) at points (u, v).

    With ``stripes`` each channel is lit only on its sub-pixel stripe and the row's lit band,
    scaled so a pixel's mean radiance equals its value; without, the screen is piecewise constant.
    """
    _, hh, ww = lin.shape
    iu = torch.floor(u).clamp(0, ww - 1).long()
    iv = torch.floor(v).clamp(0, hh - 1).long()
    val = lin[:, iv, iu]  # nearest screen pixel: (3, *u.shape)
    if not stripes:
        return val
    tu, tv = u - torch.floor(u), v - torch.floor(v)
    margin = (1 - p.fill_u) / 6  # dark gap on each side of a stripe (a third of a pixel wide)
    row_lit = (tv - 0.5).abs() <= p.fill_v / 2
    gain = 3.0 / (p.fill_u * p.fill_v)
    masks = [((tu >= c / 3 + margin) & (tu < (c + 1) / 3 - margin) & row_lit) for c in range(3)]
    return val * torch.stack(masks).to(val.dtype) * gain


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (C, H, W) with ``sigma`` pixels (reflect borders)."""
    if sigma <= 0:
        return img
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=img.dtype) ** 2) / (2 * sigma ** 2))
    k = k / k.sum()
    x = F.pad(img[:, None], (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))[:, 0]


def bayer_masks(h: int, w: int, phase: int) -> torch.Tensor:
    """RGGB colour-filter masks (3, h, w) in float64; ``phase`` shifts the 2x2 tile (0..3)."""
    dy, dx = divmod(phase, 2)
    yy = (torch.arange(h)[:, None] + dy) % 2
    xx = (torch.arange(w)[None, :] + dx) % 2
    r = (yy == 0) & (xx == 0)
    b = (yy == 1) & (xx == 1)
    return torch.stack([r, ~(r | b), b]).float()


def demosaic_bilinear(raw: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Bilinear demosaicing: each colour plane is the normalized 3x3 weighted average of its samples.

    ``raw`` (h, w) holds one sample per pixel, ``masks`` (3, h, w) says which colour; known samples
    are kept exactly. Returns (3, h, w).
    """
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=raw.dtype).view(1, 1, 3, 3)
    planes = (raw[None] * masks)[:, None]  # (3, 1, h, w)
    num = F.conv2d(F.pad(planes, (1, 1, 1, 1), mode="reflect"), k)[:, 0]
    den = F.conv2d(F.pad(masks[:, None], (1, 1, 1, 1), mode="reflect"), k)[:, 0]
    return torch.where(masks > 0, raw[None].expand_as(num), num / den.clamp_min(1e-12))


def _area_integrate(img: torch.Tensor, ss: int) -> torch.Tensor:
    return F.avg_pool2d(img[None], ss)[0] if ss > 1 else img


def output_size(screen_hw: tuple[int, int], p: MoireParams) -> tuple[int, int]:
    """Sensor frame size (h, w) for a screen of ``screen_hw`` pixels: the screen / q, times ``crop``."""
    return max(1, int(screen_hw[0] / p.q * p.crop)), max(1, int(screen_hw[1] / p.q * p.crop))


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return img.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def simulate_capture(clean: np.ndarray, p: MoireParams, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Photograph ``clean`` (uint8 (H, W, 3)) shown on a screen; returns ``(moire, target)`` uint8 (h, w, 3).

    ``seed`` drives the sensor noise only (the geometry and optics are in ``p``).
    """
    if clean.ndim != 3 or clean.shape[2] != 3 or clean.dtype != np.uint8:
        raise SqueezeError(f"simulate_capture needs a uint8 (H, W, 3) image, got {clean.dtype} {clean.shape}")
    if min(clean.shape[:2]) < MIN_SIDE:
        raise SqueezeError(f"image of {clean.shape[1]}x{clean.shape[0]} px is too small to photograph; "
                           f"use at least {MIN_SIDE} px")
    lin = (torch.from_numpy(clean.copy()).permute(2, 0, 1).float() / 255) ** DISPLAY_GAMMA  # (3, H, W) linear light
    h, w = output_size(clean.shape[:2], p)
    ss = p.supersample
    u, v = screen_coords(p, (h, w), clean.shape[:2], aperture=1.0)
    target = _area_integrate(display_radiance(lin, u, v, p, stripes=False), ss) ** (1 / DISPLAY_GAMMA)
    # the capture is rendered with a margin so lens blur and demosaicing see real neighbours at the frame edge
    m = int(math.ceil(3 * p.blur)) + 2
    u, v = screen_coords(p, (h + 2 * m, w + 2 * m), clean.shape[:2])
    radiance = _gaussian_blur(display_radiance(lin, u, v, p), p.blur * ss / p.aperture)  # in supersample units
    irradiance = _area_integrate(radiance, ss)  # (3, h+2m, w+2m): each sensor pixel's light per colour
    masks = bayer_masks(h + 2 * m, w + 2 * m, p.bayer)
    raw = (irradiance * masks).sum(0) * p.exposure
    gen = torch.Generator().manual_seed(seed)
    sigma = torch.sqrt(p.shot ** 2 * raw.clamp_min(0) + p.read ** 2)
    raw = (raw + sigma * torch.randn(raw.shape, generator=gen, dtype=raw.dtype)).clamp(0, 1)
    rgb = demosaic_bilinear(raw, masks) * torch.tensor(p.wb, dtype=raw.dtype).view(3, 1, 1)
    moire = rgb[:, m:m + h, m:m + w].clamp(0, 1) ** (1 / p.gamma)
    return _to_uint8(moire), _to_uint8(target)


def simulate_pair(clean: np.ndarray, seed: int, ranges: MoireRanges = MoireRanges(),
                  supersample: int = 6) -> tuple[np.ndarray, np.ndarray, MoireParams]:
    """A capture with parameters drawn from ``ranges`` by ``seed``: ``(moire, target, params)``."""
    rng = np.random.default_rng(seed)
    p = sample_params(rng, ranges, supersample)
    moire, target = simulate_capture(clean, p, seed=int(rng.integers(2 ** 31)))
    return moire, target, p
