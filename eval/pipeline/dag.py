"""The reproduction DAG's shape: which branches run (:class:`Family`, listed per stage in
:mod:`eval.pipeline.stages`), where their files live (:class:`Layout`) and the params file's top level.

The Snakefile calls the Layout with wildcards, the generator of ``dvc.yaml`` (:mod:`eval.pipeline.dvc_yaml`) with
DVC's placeholders, the tables stage with real names. Branches:

- pretraining: every model in ``models`` with the method (``sparse``), plus every ``ablations`` variant on the
  ``ablation_models``; once, with ``pretrain_seed`` (pretraining is the expensive stage: at paper scale, and in
  the paper, each encoder is pretrained once);
- fine-tuning: in every ``label_regimes`` regime, from scratch and from the ``sparse`` encoder of each model, and
  from every ablation encoder in the ``ablation_regimes``;
- detection: from scratch and from the ``sparse`` encoder, for the ``detection_models``.

Fine-tuning and detection run once per seed in ``seeds``; seed ``s`` fixes data order, label split, head
initialisation and augmentation alike in every arm, so two arms of one seed differ only in the encoder's
initialisation (the pairing behind the report's intervals, :mod:`eval.stats`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from spark.config import ConfigError

from ..arms import METHOD, SCRATCH

DAG_KEYS = ("preset", "seeds", "pretrain_seed", "label_regimes", "ablation_regimes", "models", "ablation_models",
            "detection_models", "ablations")  # the params file's top level besides the stage sections
ALL_LABELS = "all"  # the label regime the paper's ImageNet numbers are compared with


@dataclass(frozen=True)
class Branch:
    model: str
    init: str  # a pretraining variant, or "scratch"
    seed: int | str
    regime: str | None = None  # fine-tuning only: the label regime


@dataclass(frozen=True)
class Family:
    """Branches of one stage that share their shape, each axis named by the params key that lists its values or
    given as the values: one DVC matrix stage, and together the stage's branches."""

    model: str  # the params key of its models: models, ablation_models or detection_models
    init: str | tuple[str]  # "ablations" (every variant), or the one init, e.g. (METHOD,)
    regime: str | None = None  # label_regimes or ablation_regimes: one branch per label regime
    seeds: bool = True  # one branch per seed in ``seeds``; else one, with ``pretrain_seed``
    name: str = ""  # its DVC stage: the stage's name, then "_" + this

    @property
    def scratch(self) -> bool:
        """Whether its branches start from random weights rather than a pretrained encoder."""
        return self.init == (SCRATCH,)

    def branches(self, params: dict[str, Any]) -> Iterator[Branch]:
        inits = self.init if isinstance(self.init, tuple) else list(params[self.init] or {})
        seeds = params["seeds"] if self.seeds else [pretrain_seed(params)]
        for regime in list(params[self.regime] or []) if self.regime else [None]:
            for seed in seeds:
                for model in params[self.model] or []:
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

    def log(self, job: str, suffix: str = ".log") -> str:
        """A job's log (with ``suffix=".benchmark.tsv"``, its benchmark) under ``runs/<preset>/logs``, named after
        its run directory, or its stage for prepare and report."""
        return f"{self.runs}/logs/{job.removeprefix(f'{self.runs}/')}{suffix}"


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


def check_shape(params: dict[str, Any]) -> None:
    """The DAG-level keys: preset, seeds, models, ablation/detection models, ablation names, label regimes."""
    for key in DAG_KEYS:
        if key not in params:
            raise ConfigError(f"params: missing key '{key}'")
    if not isinstance(params["preset"], str) or not params["preset"] or "/" in params["preset"]:
        raise ConfigError(f"params: preset: expected a name (used in runs/<preset>), got {params['preset']!r}")
    seeds = params["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise ConfigError(f"params: seeds: expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"params: seeds: repeated seed in {seeds}")
    seed = pretrain_seed(params)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"params: pretrain_seed: expected an integer >= 0, got {seed!r}")
    regimes = params["label_regimes"]
    if not isinstance(regimes, dict) or not regimes or not all(isinstance(v, dict) for v in regimes.values()):
        raise ConfigError("params: label_regimes: expected a mapping of regime names to finetune overrides ({} for "
                          "none)")
    for name in regimes:
        if not isinstance(name, str) or not name or "/" in name:
            raise ConfigError(f"params: label_regimes.{name}: invalid regime name")
    if not isinstance(params["ablation_regimes"] or [], list):
        raise ConfigError("params: ablation_regimes: expected a list of label regimes")
    unknown = [r for r in ablation_regimes(params) if r not in regimes]
    if unknown:
        raise ConfigError(f"params: ablation_regimes: {unknown[0]!r} is not in label_regimes ({', '.join(regimes)})")
    if not isinstance(params["models"], dict) or not params["models"]:
        raise ConfigError("params: models: expected a mapping of model names to per-stage overrides")
    for key in ("ablation_models", "detection_models"):
        unknown = [m for m in params[key] or [] if m not in params["models"]]
        if unknown:
            raise ConfigError(f"params: {key}: {unknown[0]!r} is not in models ({', '.join(params['models'])})")
    ablations = params["ablations"] or {}
    if not isinstance(ablations, dict):
        raise ConfigError("params: ablations: expected a mapping of variant names to pretrain overrides")
    for name, overrides in ablations.items():
        if name in (METHOD, SCRATCH) or "/" in name:
            raise ConfigError(f"params: ablations.{name}: reserved or invalid variant name")
        if not isinstance(overrides, dict) or not overrides:
            raise ConfigError(f"params: ablations.{name}: expected a non-empty mapping of pretrain keys")

