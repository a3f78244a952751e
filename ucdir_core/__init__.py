"""ucdir_core: Unsupervised Cross-Domain Image Retrieval (Hu & Lee, ECCV 2022).

Reference: C. Hu and G. H. Lee, "Feature Representation Learning for Unsupervised
Cross-domain Image Retrieval", ECCV 2022, https://arxiv.org/abs/2207.09721
"""

from ucdir_core.config import PRESETS, UCDIRConfig, get_preset
from ucdir_core.pair import DomainPair

__all__ = ["DomainPair", "PRESETS", "UCDIRConfig", "get_preset"]
__version__ = "0.1.0"
