"""The reproduction DAG's shape: which branches run, where their files live, and the whole params file checked.

One place for the run layout, read by the Snakefile, the tables stage and the tests (``dvc.yaml`` spells the
same layout with ``matrix`` stages; a test holds the two together). Branches:

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

from spark.config import ConfigError, branch_section, load_params, parse_section

from .launch import STAGES, stage_resources

METHOD = "sparse"
SCRATCH = "scratch"
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
    """Paths of every stage's run directory for one preset."""

    preset: str

    @property
    def runs(self) -> str:
        return f"runs/{self.preset}"

    @property
    def results(self) -> str:
        return f"results/{self.preset}"

    def pretrain(self, model: str, variant: str, seed: int) -> str:
        return f"{self.runs}/pretrain/{model}/{variant}/seed{seed}"

    def finetune(self, model: str, init: str, seed: int, regime: str) -> str:
        return f"{self.runs}/finetune/{regime}/{model}/{init}/seed{seed}"

    def detection(self, model: str, init: str, seed: int) -> str:
        return f"{self.runs}/detection/{model}/{init}/seed{seed}"

    def run(self, stage: str, branch: Branch) -> str:
        """The run directory of ``branch`` in ``stage`` (pretrain, finetune or detection)."""
        if stage == "finetune":
            return self.finetune(branch.model, branch.init, branch.seed, branch.regime)
        return getattr(self, stage)(branch.model, branch.init, branch.seed)


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
    from eval.detection.config import DetectionConfig
    from eval.finetune.config import parse_finetune
    from spark.data.config import DataConfig
    from spark.data.paths import classification_data, detection_data
    from spark.pretrain.config import PretrainConfig

    check_shape(params)
    data = parse_section(params, "data", DataConfig)
    classification, detection = classification_data(data), detection_data(data)
    for branch in pretrain_branches(params):
        variant = None if branch.init == METHOD else branch.init
        config = parse_section(branch_section(params, "pretrain", branch.model, variant), "pretrain", PretrainConfig)
        _same_path(config.data, classification.pretrain, "pretrain.data")
    for model in params["models"]:
        for regime in label_regimes(params):
            config = parse_finetune(branch_section(params, "finetune", model, regime=regime))
            _same_path(config.data, classification.train.parent, "finetune.data")
    for model in params["detection_models"] or []:
        config = parse_section(branch_section(params, "detection", model), "detection", DetectionConfig)
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
    for key in ("preset", "seeds", "pretrain_seed", "models", "ablation_models", "detection_models", "ablations",
                "label_regimes", "ablation_regimes"):
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
