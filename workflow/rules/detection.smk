DETECTION_RUN = LAYOUT.detection("{model}", "{init}", "{seed}")


rule detection:
    """Mask R-CNN on COCO(-style) data from scratch or from the SparK encoder (Detectron2); resumable."""
    input:
        manifest=DETECTION_MANIFEST,
        encoder=init_encoder,
        code=stage_code("detection"),
    output:
        metrics=f"{DETECTION_RUN}/metrics.json",
    params:
        file=PARAMS_FILE,
        run=DETECTION_RUN,
        init=lambda w, input: input.encoder or SCRATCH,
        section=lambda w: section_hash("detection", w.model),
    threads: threads_of("detection")
    retries: retries_of("detection")
    resources:
        **resources_of("detection"),
    log:
        LAYOUT.log(DETECTION_RUN),
    benchmark:
        LAYOUT.log(DETECTION_RUN, ".benchmark.tsv")
    conda:
        "../envs/detectron2.yaml"
    shell:
        "python -m eval.cli detect --params {params.file:q} --restart-on-change"
        " --out {params.run:q} --model {wildcards.model} --init {params.init:q}"
        " detection.seed={wildcards.seed} > {log:q} 2>&1"
