"""COCO transfer: Mask R-CNN (Detectron2 0.6) fine-tuned from a SparK encoder, as in the paper.

Laid out like a Detectron2 ``projects/*`` project: a registered timm backbone (``backbone``), strict weight
conversion (``convert``), the authors' config (``config`` for params.yaml, ``recipe`` for Detectron2), layer-wise lr
decay (``optim``) and the trainer (``train``), run by ``spark detect``. Only ``config`` works
without Detectron2 installed, so params.yaml validates anywhere.
"""
