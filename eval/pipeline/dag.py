"""The reproduction DAG's shape: which branches run (:class:`Family`, listed per stage in
:mod:`eval.pipeline.stages`), where their files live (:class:`Layout`) and the params file's top level.

The Snakefile calls the Layout with wildcards, the generator of ``dvc.yaml`` (:mod:`eval.pipeline.dvc_yaml`) with
DVC's placeholders, the tables stage with real names. Branches:

- pretraining: every model in ``models`` with the method (``sparse``), plus every ``ablations`` variant on the
  ``ablation_models``; once, with ``pretrain_seed`` (pretraining is the expensive stage: at paper scale, and in
  the paper, each encoder is pretrained once);
- fine-tuning: in every ``label_regimes`` regime, from scratch and from the ``sparse`` encoder of each model, from
  a supervised classifier for the ``supervised_models`` (your own data's question: SparK or the ImageNet weights
  you use now?), and from every ablation encoder in the ``ablation_regimes``;
- detection: from scratch, from a supervised classifier (the paper's COCO baseline; eval/supervised.py says whose)
  and from the ``sparse`` encoder, for the ``detection_models``.

Fine-tuning and detection run once per seed in ``seeds``; seed ``s`` fixes data order, label split, head
initialisation and augmentation alike in every arm, so two arms of one seed differ only in the encoder's
initialisation (the pairing behind the report's intervals, :mod:`eval.stats`).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Annotated, Any, Iterator

from spark.config import AtLeast, Checked, check_fields, parse_top_level, require

from ..arms import METHOD, SCRATCH, SUPERVISED

ALL_LABELS = "all"  # the label regime the paper's ImageNet numbers are compared with


@dataclass(frozen=True)
class Branch:
    model: str
    init: str  # a pretraining variant, "scratch" or "supervised"
    seed: int | str
    regime: str | None = None  # fine-tuning only: the label regime


@dataclass(frozen=True)
class Family:
    """Branches of one stage that share their shape, each axis named by the params key that lists its values or
    given as the values: one DVC matrix stage, and together the stage's branches."""

    model: str  # the params key of its models: models, ablation_models, detection_models or supervised_models
    init: str | tuple[str]  # "ablations" (every variant), or the one init, e.g. (METHOD,)
    regime: str | None = None  # label_regimes or ablation_regimes: one branch per label regime
    seeds: bool = True  # one branch per seed in ``seeds``; else one, with ``pretrain_seed``
    name: str = ""  # its DVC stage: the stage's name, then "_" + this

    def branches(self, params: dict[str, Any]) -> Iterator[Branch]:
        inits = self.init if isinstance(self.init, tuple) else list(params[self.init] or {})
        seeds = params["seeds"] if self.seeds else [pretrain_seed(params)]
        for regime in list(params[self.regime] or []) if self.regime else [None]:
            for seed in seeds:
                for model in params.get(self.model) or []:
                    for init in inits:
                        yield Branch(model, init, seed, regime)


@dataclass(frozen=True)
class Layout:
    """Paths of every stage's run directory for one preset: the layout's one spelling. The Snakefile calls it
    with wildcards (``"{model}"``), :mod:`eval.pipeline.dvc_yaml` with DVC's placeholders (``"${item.model}"``),
    the tables stage and the tests with values."""

    preset: str

    @property
    def runs(self) -> str:
        return f"runs/{self.preset}"

    @property
    def results(self) -> str:
        return f"results/{self.preset}"

    def curve(self, stage: str, metric: str) -> str:
        """A stage's quantity per arm (mean and range over seeds) as the report stage writes it for ``dvc plots``."""
        return f"{self.results}/{curve_file(stage, metric)}"

    @property
    def estimate(self) -> str:
        """What ``spark estimate`` found the preset's jobs cost here; the workflow sizes their resubmissions by it."""
        return f"{self.runs}/estimate.json"

    def stage_runs(self, stage: str) -> str:
        """The folder holding every run of ``stage``."""
        return f"{self.runs}/{stage}"

    def run(self, stage: str, branch: Branch) -> str:
        """The run directory of ``branch`` in ``stage``: ``<stage>/[<regime>/]<model>/<init>/seed<seed>``."""
        regime = [] if branch.regime is None else [branch.regime]
        return "/".join([self.stage_runs(stage), *regime, branch.model, branch.init, f"seed{branch.seed}"])

    def encoder(self, model: str, variant: str, seed: int | str) -> str:
        """The encoder a pretraining run exports: what fine-tuning and detection start from."""
        return f"{self.run('pretrain', Branch(model, variant, seed))}/encoder.pth"

    def supervised(self, model: str, seed: int | str) -> str:
        """The DAG's own supervised classifier's trunk: the fine-tuning from scratch with all labels (``own`` in
        eval/supervised.py)."""
        return f"{self.run('finetune', Branch(model, SCRATCH, seed, ALL_LABELS))}/encoder.pth"

    def start(self, model: str, init: str, seed: int | str) -> str | None:
        """The weights a downstream branch with ``init`` reads from the DAG, the runs made with ``seed``: an
        encoder, the own supervised classifier's trunk, or None from scratch. The supervised arm depends on the own
        classifier even where its weights are published (neither engine's deps can vary with a params value in
        DVC's matrix): that run is in every preset with all labels, and a shorter one than the pretraining the
        SparK arm waits for, so it only orders jobs."""
        if init == SCRATCH:
            return None
        return self.supervised(model, seed) if init == SUPERVISED else self.encoder(model, init, seed)

    def log(self, job: str, suffix: str = ".log") -> str:
        """A job's log (with ``suffix=".benchmark.tsv"``, its benchmark) under ``runs/<preset>/logs``, named after
        its run directory, or its stage for prepare and report."""
        return f"{self.runs}/logs/{job.removeprefix(f'{self.runs}/')}{suffix}"


# In the results folder, for Snakemake's report: each table page's and figure's category and caption (as JSON),
# and the caption template that picks a file's (eval/report.py writes both, workflow/rules/report.smk reads them).
EXHIBITS, CAPTIONS = "exhibits.json", "captions.rst"


def curve_file(stage: str, metric: str) -> str:
    """Where :meth:`Layout.curve` lies in the results folder."""
    return f"curves/{stage}_{metric.replace('/', '_')}.tsv"


def layout(params: dict[str, Any]) -> Layout:
    return Layout(str(params["preset"]))


def label_regimes(params: dict[str, Any]) -> list[str]:
    """The fine-tuning label regimes, e.g. ``all`` and ``low``."""
    return list(params["label_regimes"])


def ablation_regimes(params: dict[str, Any]) -> list[str]:
    """The label regimes the ablation encoders are fine-tuned in."""
    return list(params["ablation_regimes"] or [])


def pretrain_seed(params: dict[str, Any]) -> int:
    """The seed of every pretraining run: each encoder is pretrained once, and every seed fine-tunes it."""
    return params["pretrain_seed"]


@dataclass(frozen=True)
class DagConfig(Checked):
    """The params file's top level besides the stage sections: the presets' names for the DAG's branches."""

    preset: str  # runs/<preset>, results/<preset>
    seeds: list[int]  # fine-tuning and detection run once per seed
    pretrain_seed: Annotated[int, AtLeast(0)]  # every encoder is pretrained once, with this seed
    label_regimes: dict[str, dict[str, Any]]  # name: finetune overrides
    ablation_regimes: list[str] | None  # the label regimes the ablation encoders are fine-tuned in
    models: dict[str, dict[str, Any] | None]  # name: per-stage overrides
    ablation_models: list[str] | None
    detection_models: list[str] | None
    ablations: dict[str, dict[str, Any]] | None  # variant: pretrain overrides
    supervised_models: list[str] | None = None  # which models also fine-tune from supervised weights

    @classmethod
    def parse(cls, params: dict[str, Any]) -> DagConfig:
        return parse_top_level(params, cls)

    def __post_init__(self) -> None:
        check_fields(self)
        require(_is_name(self.preset), "preset", f"expected a name (used in runs/<preset>), got {self.preset!r}")
        require(bool(self.seeds), "seeds", f"expected a non-empty list of integers, got {self.seeds!r}")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", f"repeated seed in {self.seeds}")
        require(bool(self.label_regimes), "label_regimes",
                "expected a mapping of regime names to finetune overrides ({} for none)")
        for name in self.label_regimes:
            require(_is_name(name), f"label_regimes.{name}", "invalid regime name")
        for regime in self.ablation_regimes or []:
            require(regime in self.label_regimes, "ablation_regimes",
                    f"{regime!r} is not in label_regimes ({', '.join(self.label_regimes)})")
        require(bool(self.models), "models", "expected a mapping of model names to per-stage overrides")
        for key in ("ablation_models", "detection_models", "supervised_models"):
            for model in getattr(self, key) or []:
                require(model in self.models, key, f"{model!r} is not in models ({', '.join(self.models)})")
        for name, overrides in (self.ablations or {}).items():
            require(_is_name(name) and name not in (METHOD, SCRATCH), f"ablations.{name}",
                    "reserved or invalid variant name")
            require(bool(overrides), f"ablations.{name}", "expected a non-empty mapping of pretrain keys")


DAG_KEYS = tuple(f.name for f in fields(DagConfig))  # what the report reads of the params file besides sections


def _is_name(name: Any) -> bool:
    """Usable as a folder name: a non-empty string without '/'."""
    return isinstance(name, str) and bool(name) and "/" not in name
