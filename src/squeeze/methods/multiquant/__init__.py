"""MultiQuant / MBQuant (Zhong et al., "MBQuant: A Novel Multi-Branch Topology Method for Arbitrary Bit-width
Network Quantization", arXiv 2305.08117): one quantization-aware-trained network that runs at any
activation bit width of its list, with 2-bit weights in independent branches.

Trained with ``squeeze train multiquant --model resnet-fmnist --bits 2,3,4,5,6,7,8`` (also the
``any-precision``, ``multiquant-no-amortization`` and ``multiquant-no-distill`` variants), evaluated
with ``squeeze eval RUN --abits B``. Not a post-training method, so it is not in ``squeeze methods``.
"""
from squeeze.methods.multiquant.config import VARIANTS, BranchPlan, MultiQuantConfig, branch_plan, parse_bits
from squeeze.methods.multiquant.network import MultiBitResNet
from squeeze.methods.multiquant.run import eval_run, load_run, train_multiquant

__all__ = ["VARIANTS", "BranchPlan", "MultiQuantConfig", "MultiBitResNet", "branch_plan", "eval_run", "load_run",
           "parse_bits", "train_multiquant"]
