"""The paper's motivation for sparse encoding, measured: what zero-outing (the dense convnet on the image with masked
pixels set to 0) does that the sparse encoder does not.

The paper argues it with figures and no numbers: zero-outing shifts the pixel distribution (:mod:`.pixels`) and the
BatchNorm statistics (:mod:`.batch_norm`) away from those of unmasked images, and the mask pattern fades through
dense convolutions (:mod:`.survival`; the authors' fixed-weight demonstration, :mod:`.demo`). Each measurement is a
pure function of images, masks and encoders (:mod:`.encoders`) returning numbers with bootstrap intervals over
images; :mod:`.run` is the ``motivation`` stage that writes them and their figures (:mod:`.figures`).
"""
