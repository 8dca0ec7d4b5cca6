"""Shared image-restoration harness: a small multi-scale restoration network, its losses, patch sampling,
training through the shared engine, RGB PSNR/SSIM evaluation, and ``squeeze restore`` for user photos.

Used by UnDeM (unpaired demoireing, AAAI 2024; :mod:`squeeze.methods.undem`) and HQSS (shadow removal by
high-quality shadow synthesis, arXiv 2212.04108). Submodules: ``nets``, ``losses``, ``data``, ``train``,
``evaluate``, ``io``, ``cli``.
"""
