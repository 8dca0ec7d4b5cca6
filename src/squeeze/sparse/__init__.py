"""N:M sparsity (``squeeze train nm``, ``squeeze check-nm``, ``squeeze bench nm``).

* :mod:`squeeze.sparse.masks` - pure mask math (N:M along inputs, transposable, unstructured, Bi-Mask
  backward masks and permutation score, SpRe's spatial mask);
* :mod:`squeeze.sparse.layers` - SR-STE / Bi-Mask / transposable training layers and the module swap;
* :mod:`squeeze.sparse.config` - configs (Bi-Mask and SpRe extend them in ``squeeze.methods``);
* :mod:`squeeze.sparse.task`, :mod:`squeeze.sparse.run` - fine-tuning on the shared engine;
* :mod:`squeeze.sparse.export` - compact N:M files, loader and ``check_nm``.
"""
from squeeze.sparse.config import METHODS, NMConfig, make_nm_config
from squeeze.sparse.export import check_nm, load_nm, save_nm

__all__ = ["METHODS", "NMConfig", "check_nm", "load_nm", "make_nm_config", "save_nm"]
