PRETRAIN_RUN = LAYOUT.pretrain("{model}", "{variant}", "{seed}")


rule pretrain:
    """SparK pretraining of one model, variant and seed. After a kill, the same command resumes the run from its
    checkpoint.pth (not a declared output, so Snakemake keeps it)."""
    input:
        manifest=CLASSIFICATION_MANIFEST,
        code=stage_code("pretrain"),
    output:
        encoder=LAYOUT.encoder("{model}", "{variant}", "{seed}"),
        metrics=f"{PRETRAIN_RUN}/metrics.json",
        figure=f"{PRETRAIN_RUN}/reconstruction.png",
    params:
        file=PARAMS_FILE,
        run=PRETRAIN_RUN,
        section=lambda w: section_hash("pretrain", w.model, w.variant),
    threads: threads_of("pretrain")
    retries: retries_of("pretrain")
    resources:
        **resources_of("pretrain"),
    log:
        LAYOUT.log(PRETRAIN_RUN),
    benchmark:
        LAYOUT.log(PRETRAIN_RUN, ".benchmark.tsv")
    conda:
        "../envs/spark.yaml"
    shell:
        "python -m eval.cli pretrain --params {params.file:q} --restart-on-change"
        " --out {params.run:q} --model {wildcards.model} --variant {wildcards.variant}"
        " pretrain.seed={wildcards.seed} > {log:q} 2>&1"
