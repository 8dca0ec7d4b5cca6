"""UnDeM: learning image demoireing from unpaired real data (Zhang et al., AAAI 2024).

``config`` (UnDeMConfig and its named variants), ``math`` (complexity grouping, Laplacian-gap filter, overlay
baseline), ``models`` (moire encoders, generator, discriminator, CycleGAN-lite), ``data`` (unpaired pools from
the screen-capture simulator or folders), ``task`` (generator training on the shared engine), ``pipeline``
(pseudo pairs and the demoireing RestoreNet), ``cli`` (``squeeze train undem``). See docs/methods/undem.md.
"""
from squeeze.methods.undem.config import VARIANTS, UnDeMConfig, make_undem_config  # noqa: F401
