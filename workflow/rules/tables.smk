rule tables:
    """The paper's tables (Markdown, CSV, LaTeX), figures and REPORT.md from every run's metrics."""
    input:
        pretrain=[f"{LAYOUT.run('pretrain', b)}/metrics.json" for b in pretrain_branches(PARAMS)],
        finetune=[f"{LAYOUT.run('finetune', b)}/metrics.json" for b in finetune_branches(PARAMS)],
        detection=[f"{LAYOUT.run('detection', b)}/metrics.json" for b in detection_branches(PARAMS)],
        code=stage_code("tables"),
    output:
        directory(LAYOUT.results),
    params:
        file=PARAMS_FILE,
    threads: threads_of("tables")
    resources:
        **resources_of("tables"),
    log:
        LAYOUT.log("tables"),
    conda:
        "../envs/spark.yaml"
    shell:
        "python -m eval.cli report --params {params.file:q} --out {output:q} > {log:q} 2>&1"
