"""SparK: BERT-style sparse and hierarchical masked modeling for any timm convnet (arXiv 2301.03580).

The method: :mod:`spark.model` (build a :class:`~spark.model.SparK` from a :class:`~spark.model.SparKConfig`),
made of :mod:`spark.encoder` and :mod:`spark.sparse` (the unmodified timm encoder made sparse), :mod:`spark.densify`,
:mod:`spark.decoder` and :mod:`spark.loss`; :mod:`spark.weights` loads every checkpoint layout;
:mod:`spark.engine` is the training machinery and :mod:`spark.pretrain` the pretraining run built on it. Import
from those modules: this package exports nothing itself, so that ``spark.config`` or ``spark.io`` alone does not
import the model.
"""
