rule detection:
    """Mask R-CNN on COCO(-style) data from scratch or from the SparK encoder (Detectron2); resumable."""
    input:
        manifest=DETECTION_MANIFEST,
        encoder=finetune_init,
        code=stage_code("detection"),
    output:
        metrics=f"{LAYOUT.runs}/detection/{{model}}/{{init}}/seed{{seed}}/metrics.json",
    params:
        file=PARAMS_FILE,
        run=lambda w: LAYOUT.detection(w.model, w.init, w.seed),
        init=lambda w, input: input.encoder or SCRATCH,
        section=lambda w: section_hash("detection", w.model),
    threads: stage_resources(PARAMS, "detection").threads
    resources:
        **resources_of("detection"),
    log:
        f"{LOGS}/detection/{{model}}/{{init}}/seed{{seed}}.log",
    benchmark:
        f"{LOGS}/detection/{{model}}/{{init}}/seed{{seed}}.benchmark.tsv"
    conda:
        "../envs/detectron2.yaml"
    shell:
        "python -m eval.launch detection eval.detection --params {params.file:q} --restart-on-change"
        " --out {params.run:q} --model {wildcards.model} --init {params.init:q}"
        " detection.seed={wildcards.seed} > {log:q} 2>&1"
