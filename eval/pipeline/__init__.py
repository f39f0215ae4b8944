"""The DAG, defined once: branches and their sections, the Layout of every path, each stage's resources and code;
Snakemake's rules and the generated ``dvc.yaml`` are views of it."""
