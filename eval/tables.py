"""Result tables laid out like the paper's, from the runs' ``metrics.json`` and ``run.json`` files.

Pure functions from run records to DataFrames of numbers (each mean over seeds beside its sample std, paired
differences with their 95% intervals, reference columns from :mod:`eval.reference`); :func:`display` formats
them for reading, and :mod:`eval.report` writes the numbers as CSV and the formatted tables as Markdown and LaTeX.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from . import reference
from .arms import METHOD, SCRATCH, SUPERVISED
from .pipeline.dag import ALL_LABELS, Branch, Layout, ablation_regimes, label_regimes
from .pipeline.stages import STAGES, training_stages
from spark.errors import InputError

from .stats import paired_difference

MISSING = "—"
STD = " std"  # suffix of the sample-std column beside each mean column
SEEDS = " seeds"  # suffix of the column counting the seeds a value rests on (those with a finite result)
COCO_COLUMNS = [("bbox", "AP", "AP^bb"), ("bbox", "AP50", "AP^bb_50"), ("bbox", "AP75", "AP^bb_75"),
                ("segm", "AP", "AP^mk"), ("segm", "AP50", "AP^mk_50"), ("segm", "AP75", "AP^mk_75")]


class RunRecordError(InputError):
    """A run the tables need has no (readable) ``metrics.json``/``run.json``; the message names the file."""


@dataclass
class Run:
    """One finished run: its branch, directory, metrics and provenance."""

    stage: str
    branch: Branch
    path: Path
    metrics: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    pulled: bool = False  # its files came from a DVC remote (``dvc pull``) rather than a run here


def load_runs(params: dict[str, Any], root: str | Path = ".") -> dict[str, list[Run]]:
    """Every branch's run of every stage; a missing ``metrics.json`` is an error naming the file."""
    layout = Layout(str(params["preset"]))
    stages = {stage.name: stage.branches(params) for stage in training_stages()}
    runs: dict[str, list[Run]] = {}
    for stage, branches in stages.items():
        runs[stage] = []
        for branch in branches:
            path = Path(root) / layout.run(stage, branch)
            if not (path / "metrics.json").is_file():
                raise RunRecordError(f"{path / 'metrics.json'}: missing; run the {stage} stage first")
            info = _read_json(path / "run.json") if (path / "run.json").is_file() else {}
            pulled = not (path / STAGES[stage].log).is_file()  # a run leaves its log; a pull brings only outputs
            runs[stage].append(Run(stage, branch, path, _read_json(path / "metrics.json"), info, pulled))
    return runs


def _read_json(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunRecordError(f"{path}: unreadable ({err}); rerun the stage that writes it") from None
    if not isinstance(record, dict):
        raise RunRecordError(f"{path}: expected a JSON object, got {type(record).__name__}")
    return record


def _finite(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample std over seeds of the finite values (std NaN for one value, both NaN for none)."""
    values = _finite(values)
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _stat(row: dict[str, Any], column: str, values: Iterable[float | None]) -> None:
    """``column`` (mean), ``column std`` (sample std) and ``column seeds`` (how many seeds had a finite value) over
    seeds, as numbers: a diverged seed is left out of the mean, and the count says so."""
    values = _finite(values)
    row[column], row[column + STD] = mean_std(values)
    row[column + SEEDS] = len(values)


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The table for reading (Markdown, LaTeX): ``X`` and ``X std`` become one ``80.12 ± 0.31`` column (``80.12``
    for one seed, ``—`` for none); other numbers keep two decimals. A value resting on fewer seeds than the row's
    ``seeds`` (the runs behind it) says on how many: ``80.12 ± 0.31 (2 of 3 seeds)``."""
    shown = pd.DataFrame(index=table.index)
    for column in table.columns:
        if column.endswith((STD, SEEDS)):
            continue
        values = table[column]
        if column + STD in table.columns:
            texts = [_plus_minus(m, s) for m, s in zip(values, table[column + STD])]
        elif pd.api.types.is_float_dtype(values):
            texts = [MISSING if not math.isfinite(v) else f"{v:.2f}" for v in values]
        else:
            shown[column] = values.fillna(MISSING)
            continue
        if column + SEEDS in table.columns and "seeds" in table.columns:
            texts = [_on_fewer_seeds(t, n, total) for t, n, total in zip(texts, table[column + SEEDS], table["seeds"])]
        shown[column] = texts
    return shown


def _on_fewer_seeds(text: str, seeds: int, total: int) -> str:
    return text if text == MISSING or seeds >= total else f"{text} ({seeds} of {total} seeds)"


def _plus_minus(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return MISSING
    return f"{mean:.2f}" if not math.isfinite(std) else f"{mean:.2f} ± {std:.2f}"


def _reference(table: dict[Any, tuple[float, str]], key: Any) -> float:
    return table[key][0] if key in table else math.nan


def _grouped(runs: list[Run]) -> dict[tuple[str, str | None, str], list[Run]]:
    groups: dict[tuple[str, str | None, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.branch.model, run.branch.regime, run.branch.init), []).append(run)
    return groups


def _by_seed(runs: list[Run], value: Callable[[Run], float | None]) -> dict[int, float]:
    return {r.branch.seed: v for r in runs if (v := value(r)) is not None and math.isfinite(v)}


def init_name(init: str) -> str:
    """An init as the tables and plots name it: ``scratch``, ``supervised``, ``SparK``, ``SparK (zero_out)``."""
    if init in (SCRATCH, SUPERVISED):
        return init
    return "SparK" if init == METHOD else f"SparK ({init})"


PAPER_ARMS = {METHOD: "SparK", SUPERVISED: "supervised"}  # the detection arms the paper's COCO tables have


def imagenet_table(finetune: list[Run], archs: dict[str, str]) -> pd.DataFrame:
    """Table 1: top-1/top-5 per model, label regime and init (scratch, supervised where run, SparK), with the
    paper's top-1 of SparK and of supervised training from scratch."""
    rows = []
    for (model, regime, init), runs in _grouped(finetune).items():
        if init not in (SCRATCH, SUPERVISED, METHOD):
            continue
        row: dict[str, Any] = {"model": model, "labels": regime, "init": init_name(init)}
        _stat(row, "top-1", (r.metrics["top1"] for r in runs))
        _stat(row, "top-5", (r.metrics["top5"] for r in runs))
        _stat(row, "EMA top-1", (r.metrics.get("ema_top1") for r in runs))
        reference_table = {METHOD: reference.IMAGENET_TOP1, SCRATCH: reference.SUPERVISED_TOP1}.get(init, {})
        row["paper top-1"] = _reference(reference_table, archs[model]) if regime == ALL_LABELS else math.nan
        row["seeds"] = len(runs)
        rows.append(row)
    return pd.DataFrame(rows)


def coco_table(detection: list[Run], archs: dict[str, str], supervised: dict[str, str],
               schedules: dict[str, str | None]) -> pd.DataFrame:
    """Table 2: Mask R-CNN box and mask AP per model and init (scratch, supervised, SparK), with the paper's AP of
    the arms it has (SparK and supervised) where the run trains on the paper's schedule; ``supervised`` names each
    model's supervised weights, ``schedules`` each model's schedule (None: not one of the paper's)."""
    rows = []
    for (model, _, init), runs in _grouped(detection).items():
        row: dict[str, Any] = {"model": model, "init": init_name(init), "schedule": schedules[model] or MISSING,
                               "weights": supervised[model] if init == SUPERVISED else MISSING}
        for task, key, column in COCO_COLUMNS:
            _stat(row, column, (r.metrics[task][key] for r in runs))
        paper = reference.COCO_AP.get((archs[model], PAPER_ARMS.get(init), schedules[model]))
        row["paper AP^bb"], row["paper AP^mk"] = paper[:2] if paper else (math.nan, math.nan)
        row["seeds"] = len(runs)
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_table(pretrain: list[Run], finetune: list[Run], model: str, arch: str, variants: list[str],
                   regime: str) -> pd.DataFrame:
    """Table 3: fine-tuning top-1 of each pretraining variant in one label regime, and its paired difference to the
    full method (variant - sparse, mean over seeds with its 95% interval), beside the paper's where it has one (its
    rows: ConvNeXt-S, all labels)."""
    top1 = {init: runs for (m, r, init), runs in _grouped(finetune).items() if m == model and r == regime}
    loss = {init: [r.metrics["loss"] for r in runs] for (m, _, init), runs in _grouped(pretrain).items() if m == model}
    def accuracy(run: Run) -> float:
        return run.metrics["top1"]

    base = _by_seed(top1[METHOD], accuracy)
    rows = []
    for variant in [METHOD, *variants]:
        row: dict[str, Any] = {"variant": variant}
        _stat(row, "top-1", (accuracy(r) for r in top1[variant]))
        diff = None if variant == METHOD else paired_difference(_by_seed(top1[variant], accuracy), base)
        row["Δ top-1"] = diff.mean if diff else math.nan
        row["Δ top-1" + SEEDS] = diff.n if diff else 0
        row["Δ 95% low"], row["Δ 95% high"] = (diff.low, diff.high) if diff else (math.nan, math.nan)
        # one pretraining per variant (pretrain_seed), not one per fine-tuning seed: no seed count beside it
        row["final pretraining loss"], row["final pretraining loss" + STD] = mean_std(loss[variant])
        row["paper Δ"] = _reference(reference.ABLATION_TOP1_DELTA, (arch, variant)) if regime == ALL_LABELS else \
            math.nan
        row["seeds"] = len(top1[variant])
        rows.append(row)
    return pd.DataFrame(rows)


def claims_table(params: dict[str, Any], runs: dict[str, list[Run]], archs: dict[str, str],
                 schedules: dict[str, str | None]) -> pd.DataFrame:
    """The paper's claims, each as a paired difference over seeds (the paper's direction positive), its 95%
    interval and the verdict of :mod:`eval.stats`, beside the paper's own difference where it has the same comparison
    (``paper Δ``: the model's architecture, all labels, Mask R-CNN on the paper's schedule; ``archs`` and
    ``schedules`` as the tables take them)."""
    finetune, detection = _grouped(runs["finetune"]), _grouped(runs["detection"])
    rows = []

    def claim(text: str, evidence: str, paper: float, better: list[Run], worse: list[Run],
              value: Callable[[Run], float | None], unit: str) -> None:
        diff = paired_difference(_by_seed(better, value), _by_seed(worse, value))
        ran = {r.branch.seed for r in better} & {r.branch.seed for r in worse}
        rows.append({"claim": text, "paper's evidence": evidence, "paper Δ": paper, "metric": unit,
                     "difference": diff.mean, "95% low": diff.low, "95% high": diff.high, "seeds": diff.n,
                     "seeds run": len(ran), "verdict": diff.verdict})

    for model in params["models"]:
        for regime in label_regimes(params):
            all_labels = regime == ALL_LABELS
            evidence = {SCRATCH: reference.CLAIM_EVIDENCE["classification" if all_labels else "low-label"],
                        SUPERVISED: reference.CLAIM_EVIDENCE["classification supervised"]}
            scratch = _reference(reference.IMAGENET_TOP1, archs[model]) - _reference(reference.SUPERVISED_TOP1,
                                                                                     archs[model])
            paper = {SCRATCH: round(scratch, 1) if all_labels else math.nan,
                     SUPERVISED: math.nan}  # the paper's supervised transfer is COCO's only
            baselines = (SUPERVISED, SCRATCH) if model in (params.get("supervised_models") or []) else (SCRATCH,)
            for baseline in baselines:
                claim(f"SparK > {baseline}, classification ({regime} labels, {model})", evidence[baseline],
                      paper[baseline], finetune[model, regime, METHOD], finetune[model, regime, baseline],
                      lambda r: r.metrics["top1"], "top-1")
    for model in params["detection_models"] or []:
        papers = [reference.COCO_AP.get((archs[model], PAPER_ARMS[init], schedules[model]))
                  for init in (METHOD, SUPERVISED)]
        for i, (task, name) in enumerate((("bbox", "AP^bb"), ("segm", "AP^mk"))):
            for baseline, evidence in ((SUPERVISED, f"detection {task}"), (SCRATCH, "detection scratch")):
                paper = round(papers[0][i] - papers[1][i], 1) if baseline == SUPERVISED and all(papers) else math.nan
                claim(f"SparK > {baseline}, detection {name} ({model})", reference.CLAIM_EVIDENCE[evidence], paper,
                      detection[model, None, METHOD], detection[model, None, baseline],
                      lambda r, task=task: r.metrics[task]["AP"], name)
    for model in params["ablation_models"] or []:
        for regime in ablation_regimes(params):
            for variant in params["ablations"] or {}:
                text, evidence = reference.ABLATION_CLAIMS.get(variant, (f"sparse > {variant}", MISSING))
                # the paper's row is variant - sparse: the claim's direction turns it around
                paper = -_reference(reference.ABLATION_TOP1_DELTA, (archs[model], variant)) \
                    if regime == ALL_LABELS else math.nan
                claim(f"{text} ({regime} labels, {model})", evidence, paper, finetune[model, regime, METHOD],
                      finetune[model, regime, variant], lambda r: r.metrics["top1"], "top-1")
    return pd.DataFrame(rows)


def display_claims(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims table for reading: the difference and its interval in one column; a motivation row (an
    ``images`` count: a bootstrap over images) says how many images its interval rests on."""
    shown = claims[["claim", "paper's evidence"]].copy()
    images = claims["images"] if "images" in claims.columns else pd.Series(math.nan, index=claims.index)
    shown["this run: difference [95% interval]"] = [
        MISSING if n == 0 and not math.isfinite(i) else f"{d:+.2f} {m}" + (
            f" [{lo:+.2f}, {hi:+.2f}]" if n > 1 or math.isfinite(i) else " (one seed: no interval)")
        for d, m, lo, hi, n, i in zip(claims["difference"], claims["metric"], claims["95% low"], claims["95% high"],
                                      claims["seeds"], images)]
    shown["seeds (or images)"] = [
        f"{int(i)} images (bootstrap)" if math.isfinite(i) else
        str(n) if n == ran else f"{n} of {ran} (non-finite results left out)"
        for n, ran, i in zip(claims["seeds"], claims["seeds run"], images)]
    shown["verdict"] = claims["verdict"]
    return shown


# The motivation measurements (eval/motivation): one encoder on many images, intervals bootstrapped over images.
MOTIVATION_ENCODERS = ("pretrained", "random_init")


def motivation_claims(motivation: list[Run]) -> pd.DataFrame:
    """Per model, the paper's motivation claims from its ``motivation`` run (the pretrained encoder's): zero-outing
    shifts the pixels and the first BatchNorm's statistics more than sparse encoding, and the mask pattern survives
    sparse encoding at every scale while it fades under zero-outing. Columns as :func:`claims_table`'s, ``seeds``
    0 and ``images`` the count the bootstrap resamples."""
    rows = []
    for run in motivation:
        model, metrics = run.branch.model, run.metrics
        encoder = next(e for e in MOTIVATION_ENCODERS if e in metrics["encoders"])
        measured = metrics["encoders"][encoder]
        claims = [(f"Zero-outing shifts the pixel distribution more than sparse encoding ({model})", "pixels",
                   "W1 zero-outed − visible", metrics["pixel_shift"]["difference"])]
        claims += [(f"Zero-outing shifts the first BatchNorm's input statistics more than sparse encoding ({model}, "
                    f"{bn['layer']})", "batch_norm", "KL zero-outed − sparse", bn["difference"])
                   for bn in measured["bn_shift"][:1]]
        claims += [(f"The mask pattern survives sparse encoding and fades under zero-outing (scale "
                    f"1/{scale['reduction']}, {model})", "survival", "AUROC sparse − dense", scale["difference"])
                   for scale in measured["mask_survival"]]
        for text, evidence, metric, interval in claims:
            rows.append({"claim": text, "paper's evidence": reference.MOTIVATION_EVIDENCE[evidence],
                         "paper Δ": math.nan, "metric": metric,
                         "difference": interval["estimate"], "95% low": interval["low"], "95% high": interval["high"],
                         "seeds": 0, "seeds run": 0, "images": interval["n"], "verdict": interval["verdict"]})
    return pd.DataFrame(rows)


def motivation_table(motivation: list[Run]) -> pd.DataFrame:
    """Every motivation number per model and encoder (pretrained, and a random initialisation for reference): each
    measure under zero-outing (dense) and sparse encoding, and their difference with its bootstrap interval. An
    encoder without BatchNorm (ConvNeXt's LayerNorms) says so in its BN row."""
    rows = []
    for run in motivation:
        pixels = run.metrics["pixel_shift"]
        rows.append(_motivation_row(run.branch.model, MISSING, "pixel shift (W1 to unmasked)", pixels["zero_out"],
                                    pixels["visible"], pixels["difference"]))
        for encoder, measured in run.metrics["encoders"].items():
            if not measured["bn_shift"]:
                rows.append(_motivation_row(run.branch.model, encoder, "BN input shift: no BatchNorm in this encoder",
                                            math.nan, math.nan))
            for bn in measured["bn_shift"]:
                rows.append(_motivation_row(run.branch.model, encoder, f"BN input shift (KL), {bn['layer']}",
                                            bn["zero_out"], bn["sparse"], bn["difference"]))
            for scale in measured["mask_survival"]:
                where = f"scale 1/{scale['reduction']}"
                rows.append(_motivation_row(run.branch.model, encoder, f"mask AUROC, {where}", scale["auroc"]["dense"],
                                            scale["auroc"]["sparse"], scale["difference"]))
                rows.append(_motivation_row(run.branch.model, encoder, f"masked positions exactly 0, {where}",
                                            scale["zero_fraction"]["dense"], scale["zero_fraction"]["sparse"]))
    return pd.DataFrame(rows)


def _motivation_row(model: str, encoder: str, measure: str, zero_out: float, sparse: float,
                    interval: dict[str, Any] | None = None) -> dict[str, Any]:
    interval = interval or {}
    return {"model": model, "encoder": encoder, "measure": measure, "zero-outed (dense)": zero_out,
            "sparse": sparse, "difference": interval.get("estimate", math.nan),
            "95% low": interval.get("low", math.nan), "95% high": interval.get("high", math.nan),
            "verdict": interval.get("verdict", MISSING)}


def provenance_table(runs: dict[str, list[Run]]) -> pd.DataFrame:
    """Every run behind a table cell: where it is, how it was made (engine, host, wall time, versions) and whether
    it was pulled from a DVC remote rather than run in this workspace."""
    rows = []
    for stage, stage_runs in runs.items():
        for run in stage_runs:
            rows.append({
                "stage": stage,
                "model": run.branch.model,
                "labels": run.branch.regime or MISSING,
                "init/variant": run.branch.init,
                "seed": run.branch.seed,
                "run": str(run.path),
                "git commit": _short_commit(run.info.get("git_commit")),
                "params hash": run.info.get("params_hash", MISSING),
                "engine": run.info.get("engine", MISSING),
                "host": run.info.get("host", MISSING),
                "pulled": "yes" if run.pulled else "no",
                "wall time (min)": run.info["wall_time_s"] / 60 if "wall_time_s" in run.info else math.nan,
                "precision": run.info.get("precision", MISSING),
                "hardware": run.info.get("hardware", MISSING),
                "software": _versions(run.info.get("software") or {}),
            })
    return pd.DataFrame(rows)


def _short_commit(commit: str | None) -> str:
    """12 hex digits of a commit, with ``+dirty`` and ``(installed)`` marks; ``unknown (why)`` as recorded."""
    if not commit:
        return MISSING
    head, _, installed = commit.partition(" ")
    sha, _, dirty = head.partition("+")
    if len(sha) != 40 or any(c not in "0123456789abcdef" for c in sha):
        return commit
    return sha[:12] + ("+dirty" if dirty else "") + (" (installed)" if installed else "")


def _versions(software: dict[str, str | None]) -> str:
    return ", ".join(f"{k} {v}" for k, v in software.items() if k in ("torch", "timm", "detectron2") and v) or MISSING
