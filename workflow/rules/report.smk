def exhibit(field):
    """What the report stage says of one file it wrote (its exhibits.json: category, caption), for Snakemake's
    report; read when `snakemake --report` runs, after the stage."""

    def value(wildcards, output):
        return json.loads(Path(output[0], EXHIBITS).read_text())[wildcards.exhibit][field]

    return value


rule report:
    """The paper's tables (Markdown, CSV, LaTeX, HTML), figures, training curves and REPORT.md from every run's
    metrics. For `snakemake --report report.html` (`make report`), the tables as HTML pages and the figures, each in
    its category with its caption (written by the stage: captions.rst picks each file's)."""
    input:
        metrics=[f"{LAYOUT.run(s.name, b)}/metrics.json" for s in training_stages() for b in s.branches(PARAMS)],
        code=stage_code("report"),
    output:
        report(
            directory(LAYOUT.results),
            patterns=[r"{exhibit,[^/]+\.(?:html|png)}"],
            category=exhibit("category"),
            caption=str(Path(LAYOUT.results, CAPTIONS).resolve()),
        ),
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
