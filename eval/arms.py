"""The arms every comparison names: the method's own pretraining variant and the downstream baseline without
pretrained weights. A leaf module, so that the stages and the pipeline share the names without importing each other."""

METHOD = "sparse"  # the pretraining variant that is the method itself (not an ablation)
SCRATCH = "scratch"  # a downstream run's init without pretrained weights (the baseline arm)
