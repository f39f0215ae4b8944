"""The arms every comparison names: the method's own pretraining variant and the downstream baselines, without
pretrained weights and from a supervised classifier. A leaf module, so that the stages and the pipeline share the names without importing each other."""

METHOD = "sparse"  # the pretraining variant that is the method itself (not an ablation)
SCRATCH = "scratch"  # a downstream run's init without pretrained weights (the baseline arm)
SUPERVISED = "supervised"  # a detection run's init from a supervised classifier (the paper's COCO baseline arm)
