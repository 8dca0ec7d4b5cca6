"""Round-to-nearest baselines: ``rtn`` (min-max ranges) and ``percentile`` (clipped activations)."""
from squeeze.methods.rtn.method import PercentileConfig, RTNConfig

__all__ = ["PercentileConfig", "RTNConfig"]
