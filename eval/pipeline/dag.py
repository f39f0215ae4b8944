"""The reproduction DAG's shape: which branches run, where their files live, and the whole params file checked.

The one definition of the run layout (:class:`Layout`): the Snakefile calls it with wildcards, the generator of
``dvc.yaml`` (:mod:`eval.pipeline.dvc_yaml`) with DVC's placeholders, the tables stage with real names. Branches:

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
from pathlib import Path
from typing import Any, Iterator

from spark.config import ConfigError, load_params

from ..arms import METHOD, SCRATCH
from .branches import branch_config
from .resources import STAGES, stage_resources

DAG_KEYS = ("preset", "seeds", "pretrain_seed", "label_regimes", "ablation_regimes", "models", "ablation_models",
            "detection_models", "ablations")  # the params file's top level besides the stage sections
ALL_LABELS = "all"  # the label regime the paper's ImageNet numbers are compared with
DEFAULT_PARAMS = "params.yaml"


@dataclass(frozen=True)
class Branch:
    model: str
    init: str  # a pretraining variant, or "scratch"
    seed: int
    regime: str | None = None  # fine-tuning only: the label regime


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
        """The folder holding every run of ``stage`` (pretrain, finetune or detection)."""
        return f"{self.runs}/{stage}"

    def pretrain(self, model: str, variant: str, seed: int | str) -> str:
        return f"{self.stage_runs('pretrain')}/{model}/{variant}/seed{seed}"

    def encoder(self, model: str, variant: str, seed: int | str) -> str:
        """The encoder a pretraining run exports: what fine-tuning and detection start from."""
        return f"{self.pretrain(model, variant, seed)}/encoder.pth"

    def finetune(self, model: str, init: str, seed: int | str, regime: str) -> str:
        return f"{self.stage_runs('finetune')}/{regime}/{model}/{init}/seed{seed}"

    def detection(self, model: str, init: str, seed: int | str) -> str:
        return f"{self.stage_runs('detection')}/{model}/{init}/seed{seed}"

    def run(self, stage: str, branch: Branch) -> str:
        """The run directory of ``branch`` in ``stage`` (pretrain, finetune or detection)."""
        if stage == "finetune":
            return self.finetune(branch.model, branch.init, branch.seed, branch.regime)
        return getattr(self, stage)(branch.model, branch.init, branch.seed)

    def log(self, job: str, suffix: str = ".log") -> str:
        """A job's log (with ``suffix=".benchmark.tsv"``, its benchmark) under ``runs/<preset>/logs``, named after
        its run directory, or its stage for prepare and tables."""
        return f"{self.runs}/logs/{job.removeprefix(f'{self.runs}/')}{suffix}"


def layout(params: dict[str, Any]) -> Layout:
    return Layout(str(params["preset"]))


def label_regimes(params: dict[str, Any]) -> list[str]:
    """The fine-tuning label regimes, e.g. ``all`` and ``low``."""
    return list(params["label_regimes"])


def ablation_regimes(params: dict[str, Any]) -> list[str]:
    """The label regimes the ablation encoders are fine-tuned in."""
    return list(params["ablation_regimes"] or [])


def pretrain_branches(params: dict[str, Any]) -> Iterator[Branch]:
    seed = pretrain_seed(params)
    for model in params["models"]:
        yield Branch(model, METHOD, seed)
    for model in params["ablation_models"] or []:
        for variant in params["ablations"] or {}:
            yield Branch(model, variant, seed)


def pretrain_seed(params: dict[str, Any]) -> int:
    """The seed of every pretraining run: each encoder is pretrained once, and every seed fine-tunes it."""
    return params["pretrain_seed"]


def finetune_branches(params: dict[str, Any]) -> Iterator[Branch]:
    for regime in label_regimes(params):
        for seed in params["seeds"]:
            for model in params["models"]:
                yield Branch(model, SCRATCH, seed, regime)
                yield Branch(model, METHOD, seed, regime)
            if regime in ablation_regimes(params):
                for model in params["ablation_models"] or []:
                    for variant in params["ablations"] or {}:
                        yield Branch(model, variant, seed, regime)


def detection_branches(params: dict[str, Any]) -> Iterator[Branch]:
    for seed in params["seeds"]:
        for model in params["detection_models"] or []:
            yield Branch(model, SCRATCH, seed)
            yield Branch(model, METHOD, seed)


def validate(params: dict[str, Any]) -> None:
    """Check the whole params file as the DAG will use it: its shape, the section of every branch of every
    stage, the stages' resources, and that the stages read the data ``prepare`` writes. Raises one
    :class:`ConfigError` naming the first bad key."""
    from eval.data.config import DataConfig
    from eval.data.paths import classification_data, detection_data
    from eval.detection.config import DetectionConfig
    from eval.finetune.config import FinetuneConfig
    from spark.pretrain.config import PretrainConfig

    check_shape(params)
    data = DataConfig.parse(params)
    classification, detection = classification_data(data), detection_data(data)
    for branch in pretrain_branches(params):
        config = branch_config(params, PretrainConfig, model=branch.model, variant=branch.init)
        _same_path(config.data, classification.pretrain, "pretrain.data")
    for model in params["models"]:
        for regime in label_regimes(params):
            config = branch_config(params, FinetuneConfig, model=model, regime=regime)
            _same_path(config.data, classification.train.parent, "finetune.data")
    for model in params["detection_models"] or []:
        config = branch_config(params, DetectionConfig, model=model)
        _same_path(config.path(config.train_json), detection.train.annotations, "detection.train_json")
    for stage in STAGES:
        stage_resources(params, stage)
    unknown = sorted(set(params.get("resources") or {}) - set(STAGES))
    if unknown:
        raise ConfigError(f"params: resources.{unknown[0]}: unknown stage (known: {', '.join(STAGES)})")


def workflow_params(configfiles: list[str | Path], config: dict[str, Any],
                    default: str | Path = DEFAULT_PARAMS) -> tuple[str, dict[str, Any]]:
    """The params file a Snakemake run uses and its validated content: the one ``--configfile`` given, else
    ``params.yaml``. Stages read the file itself, so ``--config`` overrides (which would reach Snakemake but not
    the stages, nor DVC) are refused."""
    if len(configfiles) > 1:
        raise ConfigError(f"pass one params file (--configfile), got {len(configfiles)}: the presets are complete")
    path = str(configfiles[0]) if configfiles else str(default)
    params = load_params(path)
    if config and dict(config) != params:
        raise ConfigError(f"--config overrides are not supported: edit {path}, which every stage reads")
    validate(params)
    return path, params


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


def _same_path(used: str | Path, written: Path, key: str) -> None:
    if Path(used).resolve() != written.resolve():
        raise ConfigError(f"params: {key}: {used} is not where the data section puts it ({written})")
