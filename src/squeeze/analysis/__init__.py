"""Analyses of a compressed model: ``sensitivity`` (which quantized layers cost the most accuracy)."""
