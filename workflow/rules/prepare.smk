rule prepare:
    """Build the mini benchmark, or check ImageNet/COCO in place; the manifests stand for the datasets."""
    input:
        code=stage_code("prepare"),
    output:
        *MANIFESTS.values(),
    params:
        file=PARAMS_FILE,
        section=section_hash("data"),
    threads: threads_of("prepare")
    resources:
        **resources_of("prepare"),
    log:
        LAYOUT.log("prepare"),
    benchmark:
        LAYOUT.log("prepare", ".benchmark.tsv")
    conda:
        "../envs/spark.yaml"
    shell:
        "python -m eval.cli prepare --params {params.file:q} > {log:q} 2>&1"
