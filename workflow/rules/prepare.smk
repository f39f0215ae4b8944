rule prepare:
    """Build the mini benchmark, or check ImageNet/COCO in place; the manifests stand for the datasets."""
    input:
        code=stage_code("prepare"),
    output:
        CLASSIFICATION_MANIFEST,
        DETECTION_MANIFEST,
    params:
        file=PARAMS_FILE,
        section=section_hash("data"),
    threads: stage_resources(PARAMS, "prepare").threads
    resources:
        **resources_of("prepare"),
    log:
        f"{LOGS}/prepare.log",
    benchmark:
        f"{LOGS}/prepare.benchmark.tsv"
    conda:
        "../envs/spark.yaml"
    shell:
        "python -m spark.data.prepare --params {params.file:q} > {log:q} 2>&1"
