class TrainingJobs:
    """A training stage's jobs as functions of a rule's wildcards: the encoder a branch starts from, the section
    hash that reruns it when its params change, and its command (the one DVC runs, from the stage's entry)."""

    def __init__(self, stage):
        self.stage = stage
        self.run = LAYOUT.run(stage.name, Branch("{model}", "{init}", "{seed}", "{regime}" if stage.regimes else None))

    def branch(self, wildcards):
        return Branch(wildcards.model, wildcards.init, wildcards.seed, wildcards.get("regime"))

    def encoder(self, wildcards):
        """The weights a branch reads from the DAG (Layout.start): its pretraining run's encoder (every seed starts
        from the one pretraining, made with pretrain_seed), the own supervised classifier's trunk, or none."""
        if self.stage.pretrains:
            return []
        start = LAYOUT.start(wildcards.model, wildcards.init, pretrain_seed(PARAMS))
        return [start] if start else []

    def section(self, wildcards):
        if self.stage.schema is None:
            return None
        branch = self.branch(wildcards)
        variant = branch.init if self.stage.pretrains else None
        return section_hash(self.stage.name, branch.model, variant, branch.regime)

    def command(self, wildcards, input):
        branch = self.branch(wildcards)
        encoder = input.encoder[0] if input.encoder else None
        return shlex.join(self.stage.command(PARAMS_FILE, LAYOUT.run(self.stage.name, branch), branch, encoder))


for stage in training_stages():
    jobs = TrainingJobs(stage)

    rule:
        name:
            stage.name
        input:
            manifest=[MANIFESTS[stage.data]] if stage.data else [],
            encoder=jobs.encoder,
            code=stage_code(stage.name),
        output:
            **{Path(name).stem: f"{jobs.run}/{name}" for name in (*stage.outs, "metrics.json")},
        params:
            command=jobs.command,
            section=jobs.section,
        threads: threads_of(stage.name)
        retries: retries_of(stage.name)
        resources:
            **resources_of(stage.name),
        log:
            LAYOUT.log(jobs.run),
        benchmark:
            LAYOUT.log(jobs.run, ".benchmark.tsv")
        conda:
            f"../envs/{stage.conda}.yaml"
        shell:
            "{params.command} > {log:q} 2>&1"
