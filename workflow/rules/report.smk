rule report:
    """The paper's tables (Markdown, CSV, LaTeX), figures and REPORT.md from every run's metrics."""
    input:
        metrics=[f"{LAYOUT.run(s.name, b)}/metrics.json" for s in training_stages() for b in s.branches(PARAMS)],
        code=stage_code("report"),
    output:
        directory(LAYOUT.results),
    params:
        file=PARAMS_FILE,
    threads: threads_of("report")
    resources:
        **resources_of("report"),
    log:
        LAYOUT.log("report"),
    conda:
        "../envs/spark.yaml"
    shell:
        "python -m eval.cli report --params {params.file:q} --out {output:q} > {log:q} 2>&1"
