def finetune_init(wildcards):
    """The encoder a fine-tuning (or detection) branch starts from: none for scratch, else its pretraining run's
    (every seed starts from the one pretraining, made with pretrain_seed)."""
    if wildcards.init == SCRATCH:
        return []
    return [f"{LAYOUT.pretrain(wildcards.model, wildcards.init, pretrain_seed(PARAMS))}/encoder.pth"]


rule finetune:
    """ImageNet(-style) fine-tuning of one model from scratch or from one pretraining variant; resumable."""
    input:
        manifest=CLASSIFICATION_MANIFEST,
        encoder=finetune_init,
        code=stage_code("finetune"),
    output:
        metrics=f"{LAYOUT.runs}/finetune/{{regime}}/{{model}}/{{init}}/seed{{seed}}/metrics.json",
    params:
        file=PARAMS_FILE,
        run=lambda w: LAYOUT.finetune(w.model, w.init, w.seed, w.regime),
        init=lambda w, input: input.encoder or SCRATCH,
        section=lambda w: section_hash("finetune", w.model, regime=w.regime),
    threads: stage_resources(PARAMS, "finetune").threads
    resources:
        **resources_of("finetune"),
    log:
        f"{LOGS}/finetune/{{regime}}/{{model}}/{{init}}/seed{{seed}}.log",
    benchmark:
        f"{LOGS}/finetune/{{regime}}/{{model}}/{{init}}/seed{{seed}}.benchmark.tsv"
    conda:
        "../envs/spark.yaml"
    shell:
        "python -m eval.launch finetune eval.finetune --params {params.file:q} --restart-on-change"
        " --out {params.run:q} --model {wildcards.model} --regime {wildcards.regime} --init {params.init:q}"
        " finetune.seed={wildcards.seed} > {log:q} 2>&1"
