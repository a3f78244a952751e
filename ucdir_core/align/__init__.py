"""Layer 3, the alignment stage (above ``method``, below ``config``): a label-free correction of both
domains' embeddings after training.

``params`` (:class:`~ucdir_core.align.params.AlignmentParams`, the stage's own frozen parameters)
and ``stage`` (:func:`~ucdir_core.align.stage.fit_alignment`, fitted on the training images'
embeddings with the domain as the only covariate, and the small
:class:`~ucdir_core.align.stage.AlignmentModel` it returns, which corrects any new embedding of
either domain and is saved without pickle). Imports only from :mod:`ucdir_core.base` (and numpy;
harmonypy only while fitting); free of torch.
"""
