"""UIO-LLMs memory-enhanced transformer (arXiv 2406.18173): segment memories, incremental/unbiased TBPTT."""
from squeeze.memory.config import GRAD_MODES, UIOConfig
from squeeze.memory.model import MemoryLM, base_layout
from squeeze.memory.tbptt import tbptt_backward, unbiased_weight

__all__ = ["GRAD_MODES", "MemoryLM", "UIOConfig", "base_layout", "tbptt_backward", "unbiased_weight"]
