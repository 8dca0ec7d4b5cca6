"""Degradation simulators that stand in for real data sets squeeze cannot install offline.

Each simulator turns a clean photo into a physically motivated degraded version together with its exact
clean target, with randomized, seeded parameters per image: :mod:`squeeze.synth.moire` photographs a photo
shown on a display (screen-capture moire, the stand-in for FHDMi/UHDM used by UnDeM, AAAI 2024).
"""
