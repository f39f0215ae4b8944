FINETUNE_RUN = LAYOUT.finetune("{model}", "{init}", "{seed}", "{regime}")


rule finetune:
    """ImageNet(-style) fine-tuning of one model from scratch or from one pretraining variant; resumable."""
    input:
        manifest=CLASSIFICATION_MANIFEST,
        encoder=init_encoder,
        code=stage_code("finetune"),
    output:
        metrics=f"{FINETUNE_RUN}/metrics.json",
    params:
        file=PARAMS_FILE,
        run=FINETUNE_RUN,
        init=lambda w, input: input.encoder or SCRATCH,
        section=lambda w: section_hash("finetune", w.model, regime=w.regime),
    threads: threads_of("finetune")
    retries: retries_of("finetune")
    resources:
        **resources_of("finetune"),
    log:
        LAYOUT.log(FINETUNE_RUN),
    benchmark:
        LAYOUT.log(FINETUNE_RUN, ".benchmark.tsv")
    conda:
        "../envs/spark.yaml"
    shell:
        "python -m eval.cli finetune --params {params.file:q} --restart-on-change"
        " --out {params.run:q} --model {wildcards.model} --regime {wildcards.regime} --init {params.init:q}"
        " finetune.seed={wildcards.seed} > {log:q} 2>&1"
