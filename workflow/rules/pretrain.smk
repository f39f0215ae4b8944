rule pretrain:
    """SparK pretraining of one model, variant and seed. After a kill, the same command resumes the run from its
    checkpoint.pth (not a declared output, so Snakemake keeps it)."""
    input:
        manifest=CLASSIFICATION_MANIFEST,
        code=stage_code("pretrain"),
    output:
        encoder=f"{LAYOUT.runs}/pretrain/{{model}}/{{variant}}/seed{{seed}}/encoder.pth",
        metrics=f"{LAYOUT.runs}/pretrain/{{model}}/{{variant}}/seed{{seed}}/metrics.json",
        figure=f"{LAYOUT.runs}/pretrain/{{model}}/{{variant}}/seed{{seed}}/reconstruction.png",
    params:
        file=PARAMS_FILE,
        run=lambda w: LAYOUT.pretrain(w.model, w.variant, w.seed),
        section=lambda w: section_hash("pretrain", w.model, w.variant),
    threads: stage_resources(PARAMS, "pretrain").threads
    resources:
        **resources_of("pretrain"),
    log:
        f"{LOGS}/pretrain/{{model}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{LOGS}/pretrain/{{model}}/{{variant}}/seed{{seed}}.benchmark.tsv"
    conda:
        "../envs/spark.yaml"
    shell:
        "python -m eval.launch pretrain spark.pretrain --params {params.file:q} --restart-on-change"
        " --out {params.run:q} --model {wildcards.model} --variant {wildcards.variant}"
        " pretrain.seed={wildcards.seed} > {log:q} 2>&1"
