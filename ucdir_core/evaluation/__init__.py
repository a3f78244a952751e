"""Layer 6, the evaluation: what a set of embeddings is worth, whoever made them.

``metrics`` (the reference's capped P@k and mAP, blocked), ``alignment`` (domain mixing, class
agreement, prototype spread, partition agreement), ``anchors`` (the untrained features, per-domain
centring, the labelled linear map), ``embedding`` (an encoder's embeddings of both domains,
cached per model version, with their P@k and alignment) and ``index`` (a gallery index on disk:
embeddings, a faiss index, what they were made from; searched by cosine, never used when stale).
"""
