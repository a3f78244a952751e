"""ucdir_core: Unsupervised Cross-Domain Image Retrieval (Hu & Lee, ECCV 2022), and its successor
ProtoOT in the same harness.

Reference: C. Hu and G. H. Lee, "Feature Representation Learning for Unsupervised
Cross-domain Image Retrieval", ECCV 2022, https://arxiv.org/abs/2207.09721

Layers, lowest first; a module imports from its own layer or lower ones only:
``base`` -> ``models`` -> ``method`` -> ``align`` -> ``config`` -> ``data`` -> ``evaluation`` ->
``training`` -> ``inference`` -> ``companion`` -> ``cli``. The run config and presets:
:mod:`ucdir_core.config`.
"""

from ucdir_core.base.pair import DomainPair

__all__ = ["DomainPair"]
__version__ = "0.1.0"
