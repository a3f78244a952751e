"""Layer 5, the data: from folders of images to what training and evaluation read.

``images`` (decoding and the spec's transforms), ``folders`` (scanning two domains, matching
classes), ``checks`` (broken files), ``splits`` (full or held-out), ``views`` (the paired
training stream), ``cache`` and ``inputs`` (the two input pipelines: decoded images or a frozen
trunk's cached views), ``locations`` (the data home), ``datasets`` (public benchmarks) and
``digits`` (the embedded benchmark).
"""
