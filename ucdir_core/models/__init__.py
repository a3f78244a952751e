"""Layer 1, the models every method trains: :mod:`.backbones` (pretrained or small backbones, split into a
frozen trunk and a trainable top) and :mod:`.encoders` (query and key encoders, momentum update,
memory banks, parameter groups, PCA head). Used by the input pipelines (``data``) and the methods'
trainer alike."""
