"""The reproduction pipeline around the :mod:`spark` library: the ``spark`` command (:mod:`eval.cli`), the DAG
(:mod:`eval.pipeline`), the data it runs on (:mod:`eval.data`), the downstream stages (:mod:`eval.finetune`,
:mod:`eval.detection`) and the tables (:mod:`eval.report`). Beyond ``spark pretrain``, the stages need the
``pipeline`` extra (and Detectron2 for detection)."""
