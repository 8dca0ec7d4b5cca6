"""Compression methods; importing this package registers them all."""
from squeeze.methods import gptq, repq_vit, rtn  # noqa: F401
from squeeze.methods import ptq4vit  # noqa: F401
from squeeze.methods import isvit, recon  # noqa: F401
from squeeze.methods import erq  # noqa: F401
from squeeze.methods import dfsq  # noqa: F401
from squeeze.methods import spdfq  # noqa: F401
from squeeze.methods import cle  # noqa: F401
