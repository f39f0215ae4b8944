"""The tables stage: ``spark report --params params.yaml`` writes ``results/<preset>/``.

Markdown, CSV and LaTeX for each table, the figures, and ``REPORT.md`` tying every cell to its run.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from eval.data.config import DataConfig
from spark.io import write_text

from . import figures, reference
from .detection.config import DetectionConfig
from .detection.recipes import paper_schedule
from .pipeline.params import branch_config, branch_section
from .supervised import OWN
from .pipeline.dag import DagConfig, ablation_regimes
from .tables import (
    Run, ablation_table, claims_table, coco_table, display, display_claims, imagenet_table, load_runs,
    motivation_claims, motivation_table, provenance_table,
)


DATASETS = {"imagenet": "ImageNet-1K", "mini-in": "mini-in (the ImageNet stand-in)", "coco": "COCO 2017",
            "mini-coco": "mini-coco (the COCO stand-in)", "own": "your labelled images"}


def write_table(table: pd.DataFrame, stem: Path, shown: pd.DataFrame | None = None) -> str:
    """Write ``stem``.csv (the numbers) and ``stem``.md/.tex (``shown``, default :func:`eval.tables.display`);
    returns the Markdown."""
    shown = display(table) if shown is None else shown
    markdown = shown.to_markdown(index=False)
    write_text(stem.with_suffix(".md"), markdown + "\n")
    write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
    write_text(stem.with_suffix(".tex"), shown.to_latex(index=False, escape=True))
    return markdown


def detection_recipes(params: dict) -> tuple[dict[str, str], dict[str, str | None]]:
    """Each detection model's supervised weights, as the table names them, and its schedule if it is the
    paper's (1x, 3x; else None)."""
    configs = {m: branch_config(params, DetectionConfig, model=m) for m in params["detection_models"] or []}
    weights = {m: OWN_CLASSIFIER if c.supervised_weights == OWN else c.supervised_weights for m, c in configs.items()}
    return weights, {m: paper_schedule(c.recipe, c.batch_size, c.max_iter, c.steps) for m, c in configs.items()}


OWN_CLASSIFIER = "own classifier (fine-tuned from scratch, all labels)"
VERDICT_RULE = (
    "Each claim is a paired difference over seeds (the paper's direction positive): seed s fixes data order, label "
    "split, head initialisation and augmentation in both arms, so they differ only in the encoder's "
    "initialisation; every pretrained arm starts from one pretraining run (`pretrain_seed`), so the interval "
    "covers fine-tuning noise, not pretraining noise. The 95% interval is the paired t interval over seeds, "
    "mean(d) ± t(0.975, n-1)·std(d)/√n. Verdict, fixed before any run: **reproduced** if the interval lies above "
    "0, **contradicted** if it lies below 0, **inconclusive** otherwise (always with one seed). Classification uses "
    "the final model's top-1 (not the best epoch), detection the final COCO AP. The motivation rows (zero-outing vs "
    "sparse encoding) rest on one pretrained encoder and many images instead: their interval is the 95% percentile "
    "bootstrap over images (resampled from a fixed seed), not over seeds, under the same verdict rule.")

MOTIVATION_FIGURES = (
    ("pixel_histograms.png", "pixel-intensity distributions of the unmasked, zero-outed and visible-only pixels"),
    ("bn_shift.png", "the first BatchNorm's per-channel input statistics under masked inputs against unmasked ones"),
    ("mask_survival.png", "feature norms per position at each encoder scale, dense on the zero-outed image and sparse"),
    ("fixed_weight_demo.png", "the authors' demonstration: a mask through 3x3 convolutions with weights 1/9"),
)


def report(params: dict, out: Path, root: Path = Path(".")) -> Path:
    DagConfig.parse(params)
    runs = load_runs(params, root)
    archs = {m: branch_section(params, "finetune", model=m)["finetune"]["arch"] for m in params["models"]}
    out.mkdir(parents=True, exist_ok=True)
    data = DataConfig.parse(params)
    claims = pd.concat([claims_table(params, runs), motivation_claims(runs["motivation"])], ignore_index=True)
    sections = [(f"Table 1: fine-tuning on {DATASETS[data.classification]}", "imagenet",
                 imagenet_table(runs["finetune"], archs))]
    if runs["detection"]:
        sections.append((f"Table 2: Mask R-CNN on {DATASETS[data.detection]}", "coco",
                         coco_table(runs["detection"], archs, *detection_recipes(params))))
    for model in params["ablation_models"]:
        for regime in ablation_regimes(params):
            table = ablation_table(runs["pretrain"], runs["finetune"], model, archs[model], list(params["ablations"]),
                                   regime)
            sections.append((f"Table 3: ablations on {model} ({regime} labels)", f"ablations_{model}_{regime}",
                             table))
    figures.loss_curves(runs["pretrain"], out / "pretrain_loss.png")
    figures.reconstruction_grid(runs["pretrain"], out / "reconstructions.png")
    knn_runs = [run for run in runs["pretrain"] if "knn_top1" in run.metrics]
    if knn_runs:
        figures.knn_curves(knn_runs, out / "pretrain_knn.png")

    lines = [f"# SparK reproduction: results of the `{params['preset']}` preset", ""]
    if data.classification == "own":
        lines += [f"Runs on your own images (pretraining: {data.own.unlabelled}; labels: {data.own.labelled}): the "
                  "claims below answer whether SparK pretraining on them beats training from scratch and, where a "
                  "supervised arm ran, the supervised weights; the paper columns are for orientation only.", ""]
    elif data.classification != "imagenet" or data.detection != "coco":
        lines += ["These are small-scale runs on the generated mini benchmark (see DATA.md), not ImageNet/COCO: the "
                  "paper columns are for orientation, not comparison.", ""]
    lines += ["## Paper claims", "", VERDICT_RULE, "", write_table(claims, out / "claims", display_claims(claims)),
              ""]
    for title, stem, table in sections:
        lines += [f"## {title}", "", write_table(table, out / stem), ""]
    lines += motivation_section(runs["motivation"], out)
    lines += ["## Figures", "", "![pretraining loss](pretrain_loss.png)", "", "![reconstructions](reconstructions.png)", "",
              *(["![k-NN monitor](pretrain_knn.png)", ""] if knn_runs else []),
              "## Runs behind every cell", "", write_table(provenance_table(runs), out / "runs"), "",
              "## Sources of the reference columns", ""]
    lines += [f"- `{key}`: {text}" for key, text in reference.SOURCES.items()]
    path = out / "REPORT.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def motivation_section(motivation: list[Run], out: Path) -> list[str]:
    """REPORT.md's motivation part: every number of the motivation runs and their figures (copied beside it)."""
    lines = ["## Motivation: zero-outing vs sparse encoding", "",
             "These measure the paper's motivation for sparse encoding (pretraining's inputs through the pretrained "
             "encoder, dense on the zero-outed image vs sparse), not its headline numbers; the paper shows them as "
             "figures without a number. Differences are in the paper's direction, intervals bootstrapped over images.",
             "", write_table(motivation_table(motivation), out / "motivation"), ""]
    for run in motivation:
        for name, caption in MOTIVATION_FIGURES:
            copy = f"motivation_{run.branch.model}_{name}"
            shutil.copyfile(run.path / name, out / copy)
            lines += [f"![{caption} ({run.branch.model})]({copy})", "",
                      f"{caption[0].upper()}{caption[1:]} ({run.branch.model}): a test of the motivation, not of "
                      "the headline numbers.", ""]
    return lines
