"""The stages of the DAG, each defined once in :data:`STAGES`; the ``spark`` subcommands, ``resources.<stage>``,
each stage's code, the params check, the Snakemake rules and dvc.yaml all derive from it.

A stage's one name is its subcommand, its params section, its ``resources`` key, its folder under
``runs/<preset>``, its Snakemake rule and its DVC stage. Adding a stage takes an entry here and its handler, the
function its subcommand runs (docs/architecture.md shows one); then ``make dvc.yaml``.
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal

from spark.config import ConfigError, Section

from ..arms import METHOD, SCRATCH, SUPERVISED
from ..supervised import OWN, weights_file
from .params import branch_config, load_params
from .dag import ALL_LABELS, Branch, DagConfig, Family, layout, pretrain_seed
from .resources import StageResources, stage_resources

if TYPE_CHECKING:
    from eval.data.paths import PreparedData

DEFAULT_PARAMS = "params.yaml"


@dataclass(frozen=True)
class Option:
    """A command-line option of one stage's subcommand: argparse's flags and settings."""

    flags: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)


def option(*flags: str, **settings: Any) -> Option:
    return Option(flags, settings)


@dataclass(frozen=True)
class Curve:
    """A quantity a stage's runs log per epoch or iteration (dvclive's ``plots/metrics/<metric>.tsv``), compared
    across arms in the report and in ``dvc plots show``: one plot per stage and quantity."""

    metric: str  # its dvclive name, e.g. "loss", "bbox/AP"
    label: str  # the y axis
    step: str = "epoch"  # the x axis


@dataclass(frozen=True)
class Job:
    """What a handler runs: the branch's validated section (the whole params file for a stage without one), the
    subcommand's options, the stage's resources, and the params file the job read once (with its overrides)."""

    config: Any
    args: argparse.Namespace
    resources: StageResources
    params: dict[str, Any]


@dataclass(frozen=True)
class Stage:
    """One stage: its subcommand and handler, the section it reads, the branches it runs and what they exchange."""

    name: str
    help: str
    handler: Callable[[Job], Iterable[Path] | None]  # returns the files it wrote when they are worth printing
    schema: str | None = None  # "module:Class" of its section (a Section); None: it reads the whole params file
    families: tuple[Family, ...] = ()  # its branches, one run directory each; none: one job per preset
    data: Literal["classification", "detection"] | None = None  # the manifest its branches read
    outs: tuple[str, ...] = ()  # files of a run directory that other stages or a shared copy need, besides metrics
    log: str = "train.log"  # a file each run leaves beside its outputs, never shared: a run without it was pulled
    pretrains: bool = False  # a branch's init is the variant it pretrains, else the encoder it starts from
    options: tuple[Option, ...] = ()  # its own command-line options
    check: Callable[[Any, PreparedData], None] | None = None  # its section reads the data prepare writes
    plots: bool = False  # its runs log dvclive plots
    curves: tuple[Curve, ...] = ()  # of those, the ones compared across arms
    own_processes: bool = False  # it starts its own workers and sets up its own logging (Detectron2), one node
    whole_project: bool = False  # its code is all of spark/ and eval/ (it reads every section)
    conda: str = "spark"  # its environment: workflow/envs/<conda>.yaml

    @property
    def trains(self) -> bool:
        """Whether its jobs are branches, each a resumable training run in its own directory."""
        return bool(self.families)

    @property
    def regimes(self) -> bool:
        return any(f.regime for f in self.families)

    def section(self) -> type[Section] | None:
        """The dataclass of its section, imported when a job or the params check needs it."""
        if self.schema is None:
            return None
        module, name = self.schema.split(":")
        return getattr(importlib.import_module(module), name)

    def branches(self, params: dict[str, Any]) -> list[Branch]:
        """Its families' branches by label regime, seed and model (in the params file's order), then family: the
        order the tables list them in."""
        regimes, seeds, models = (list(params[key] or []) for key in ("label_regimes", "seeds", "models"))
        branches = [branch for family in self.families for branch in family.branches(params)]
        return sorted(branches, key=lambda b: (regimes.index(b.regime) if b.regime in regimes else -1,
                                               seeds.index(b.seed) if b.seed in seeds else -1,
                                               models.index(b.model)))

    def command(self, params_file: str, run: str, branch: Branch, encoder: str | None) -> list[str]:
        """A branch's job, the same under both engines; ``encoder`` is the pretrained encoder it starts from. The
        baselines are named: ``scratch``, and ``supervised``, whose weights the job finds (eval/supervised.py)."""
        argv = ["python", "-m", "eval.cli", self.name, "--params", params_file, "--restart-on-change", "--out", run,
                "--model", branch.model]
        if branch.regime is not None:
            argv += ["--regime", branch.regime]
        if self.pretrains:
            argv += ["--variant", branch.init]
        else:
            argv += ["--init", branch.init if branch.init in (SCRATCH, SUPERVISED) else encoder]
        return argv + ([f"{self.name}.seed={branch.seed}"] if self.schema else [])


def _prepare(job: Job) -> list[Path]:
    from eval.data.prepare import prepare

    check_published_weights(job.params)  # the one input from outside the DAG besides the data
    return prepare(job.config)


def _pretrain(job: Job) -> None:
    from spark.pretrain import pretrain

    pretrain(job.config, job.args.out, init_from=job.args.init_from, restart_on_change=job.args.restart_on_change)


def _finetune(job: Job) -> None:
    from eval.finetune import finetune

    finetune(job.config, job.args.out, job.args.init, job.args.restart_on_change)


def _detection(job: Job) -> None:
    import torch

    from spark.engine import require_gpus

    num_gpus = job.args.num_gpus
    if num_gpus is not None:
        require_gpus("--num-gpus", num_gpus)
    from eval.detection.train import run  # Detectron2 is imported only once the params are valid

    if num_gpus is None:
        num_gpus = job.resources.gpus if job.resources.gpus > 1 else torch.cuda.device_count()
    run(job.config, job.args.init, job.args.out, num_gpus, job.args.restart_on_change)


def _motivation(job: Job) -> None:
    """Measured on the inputs the model's pretraining feeds its encoder: the pretraining section's model, input
    size and mask."""
    from eval.motivation.run import motivation
    from spark.pretrain.config import PretrainConfig

    pretraining = branch_config(job.params, PretrainConfig, model=job.args.model, variant=METHOD)
    if job.config.arch != pretraining.arch:
        raise ConfigError(f"params: motivation.arch: {job.config.arch!r} is not the model's pretrained "
                          f"arch {pretraining.arch!r}")
    weights = None if job.args.init == SCRATCH else job.args.init
    motivation(job.config, pretraining.model_config(), job.args.out, weights)


def _report(job: Job) -> list[Path]:
    from eval.report import report
    from spark.io import check_output_dir

    out = job.args.out or Path(layout(job.config).results)
    check_output_dir(out)
    report(job.config, out)
    return [out]


def _reads_pretraining_images(config: Any, data: PreparedData) -> None:
    _same_path(config.data, data.classification.pretrain, "pretrain.data")
    if config.knn_data is not None:  # the k-NN monitor's labelled images
        _same_path(config.knn_data, data.classification.train.parent, "pretrain.knn_data")


def _reads_labelled_images(config: Any, data: PreparedData) -> None:
    _same_path(config.data, data.classification.train.parent, "finetune.data")


def _reads_validation_images(config: Any, data: PreparedData) -> None:
    _same_path(config.data, data.classification.val, "motivation.data")


def _reads_coco(config: Any, data: PreparedData) -> None:
    _same_path(config.path(config.train_json), data.detection.train.annotations, "detection.train_json")


STAGES = {stage.name: stage for stage in (
    Stage("prepare", "build the mini benchmark, or check ImageNet/COCO in place", _prepare,
          schema="eval.data.config:DataConfig"),
    Stage("pretrain", "SparK pretraining into one resumable run directory", _pretrain,
          schema="spark.pretrain.config:PretrainConfig",
          families=(Family("models", (METHOD,), seeds=False),
                    Family("ablation_models", "ablations", seeds=False, name="ablation")),
          data="classification", outs=("encoder.pth", "reconstruction.png", "run.json"), pretrains=True, plots=True,
          curves=(Curve("loss", "pretraining loss (per-patch normalised MSE)"),
                  Curve("knn_top1", "k-NN top-1 (%) of the encoder's features")),
          check=_reads_pretraining_images,
          options=(option("--init-from", type=Path, help="initial weights (ours or the authors'); ignored on "
                                                          "resume"),)),
    Stage("finetune", "fine-tune an encoder (or from scratch) on an ImageFolder", _finetune,
          schema="eval.finetune.config:FinetuneConfig",
          families=(Family("models", (SCRATCH,), regime="label_regimes", name="scratch"),
                    Family("models", (METHOD,), regime="label_regimes"),
                    Family("supervised_models", (SUPERVISED,), regime="label_regimes", name="supervised"),
                    Family("ablation_models", "ablations", regime="ablation_regimes", name="ablation")),
          data="classification", outs=("encoder.pth", "run.json"), plots=True, check=_reads_labelled_images,
          curves=(Curve("loss", "fine-tuning training loss"), Curve("top1", "validation top-1 (%)"))),
    Stage("detection", "Mask R-CNN transfer on COCO-format data (Detectron2)", _detection,
          schema="eval.detection.config:DetectionConfig",
          families=(Family("detection_models", (SCRATCH,), name="scratch"),
                    Family("detection_models", (SUPERVISED,), name="supervised"),
                    Family("detection_models", (METHOD,))),
          data="detection", outs=("run.json",), log="log.txt", plots=True, check=_reads_coco, own_processes=True,
          curves=(Curve("total_loss", "Mask R-CNN training loss", "iteration"),
                  Curve("bbox/AP", "box AP (AP^bb)", "iteration"), Curve("segm/AP", "mask AP (AP^mk)", "iteration")),
          conda="detectron2",
          options=(option("--num-gpus", type=int, help="DDP processes, one per GPU, with SyncBN; 0 or 1 trains in "
                                                        "this process (default: resources.detection.gpus when > 1, "
                                                        "else every visible GPU)"),)),
    Stage("motivation", "the paper's motivation measured: zero-outing vs sparse encoding of pretraining's inputs",
          _motivation, schema="eval.motivation.config:MotivationConfig",
          families=(Family("models", (METHOD,), seeds=False),), data="classification",
          outs=("run.json", "pixel_histograms.png", "bn_shift.png", "mask_survival.png", "fixed_weight_demo.png"),
          check=_reads_validation_images),
    Stage("report", "the paper's tables and REPORT.md from every run's metrics", _report, whole_project=True,
          options=(option("--out", type=Path, help="default: results/<preset>"),)),
)}


def training_stages() -> list[Stage]:
    """The stages whose jobs are branches, in the DAG's order."""
    return [stage for stage in STAGES.values() if stage.trains]


def validate(params: dict[str, Any]) -> None:
    """Check the whole params file as the DAG will use it: its shape, the section of every branch of every
    stage, the stages' resources, and that the stages read the data ``prepare`` writes. Raises one
    :class:`ConfigError` naming the first bad key."""
    from eval.data.config import DataConfig
    from eval.data.paths import NO_DETECTION, prepared_data

    DagConfig.parse(params)
    data = prepared_data(DataConfig.parse(params))
    for stage in training_stages():
        schema = stage.section()
        if schema is None:
            continue
        sections = dict.fromkeys((b.model, b.init if stage.pretrains else None, b.regime)
                                 for b in stage.branches(params))  # one per section, not per seed
        for model, variant, regime in sections:
            config = branch_config(params, schema, model=model, variant=variant, regime=regime)
            if stage.check:
                stage.check(config, data)
        for model in _supervised_models(params, stage):
            source = branch_config(params, schema, model=model).supervised_weights
            if source == OWN and stage.name == "finetune":
                raise ConfigError(f"params: finetune.supervised_weights: the supervised arm of {model} needs a "
                                  f"classifier trained elsewhere ('torchvision:<weights>', 'timm:<model>.<tag>' or a "
                                  f"file); '{OWN}' is this DAG's fine-tuning from scratch on these same labels")
            if source == OWN and ALL_LABELS not in params["label_regimes"]:
                raise ConfigError(f"params: label_regimes: the supervised arm of {model} reads the DAG's own "
                                  f"classifier ({stage.name}.supervised_weights: {OWN}), the fine-tuning from scratch "
                                  f"with '{ALL_LABELS}' labels: add that regime")
    if DataConfig.parse(params).detection == NO_DETECTION and params.get("detection_models"):
        raise ConfigError(f"params: detection_models: data.detection is '{NO_DETECTION}', so no model can run "
                          "Mask R-CNN: set it to [] or name detection data")
    for stage in STAGES:
        stage_resources(params, stage)
    unknown = sorted(set(params.get("resources") or {}) - set(STAGES))
    if unknown:
        raise ConfigError(f"params: resources.{unknown[0]}: unknown stage (known: {', '.join(STAGES)})")


def _supervised_models(params: dict[str, Any], stage: Stage) -> list[str]:
    """The models whose supervised arm ``stage`` runs."""
    return sorted({b.model for b in stage.branches(params) if b.init == SUPERVISED})


def supervised_start(params: dict[str, Any], stage: str, model: str) -> Path:
    """The weights file the supervised arm of ``model`` starts from in ``stage``, as its section names them."""
    source = branch_config(params, STAGES[stage].section(), model=model).supervised_weights
    return weights_file(source, own=layout(params).supervised(model, pretrain_seed(params)))


def check_published_weights(params: dict[str, Any]) -> None:
    """Every published supervised weight file the preset names is on this machine: ``prepare`` calls this, so a
    missing one stops the run before any work rather than when fine-tuning or detection starts, hours later."""
    if "models" not in params:  # a params file for prepare alone names no models
        return
    for stage in training_stages():
        for model in _supervised_models(params, stage):
            source = branch_config(params, stage.section(), model=model).supervised_weights
            if source != OWN:
                weights_file(source, own="")


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


def _same_path(used: str | Path, written: Path, key: str) -> None:
    if Path(used).resolve() != written.resolve():
        raise ConfigError(f"params: {key}: {used} is not where the data section puts it ({written})")
