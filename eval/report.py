"""The tables stage: ``spark report --params params.yaml`` writes ``results/<preset>/``.

Markdown, CSV, LaTeX and HTML for each table, the figures, the training curves per arm (``curves/*.tsv`` for
``dvc plots show``), and ``REPORT.md`` tying every cell to its run. Each table (as HTML) and figure is an exhibit of
Snakemake's report (``snakemake --report``): ``exhibits.json`` gives each its category and ``captions.rst`` its
caption, which the report rule reads (workflow/rules/report.smk).
"""
from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import pandas as pd

from eval.data.config import DataConfig
from spark.io import write_text

from . import figures, reference
from .curves import arm_curves
from .detection.config import DetectionConfig
from .pipeline.params import branch_config, branch_section
from .pipeline.stages import training_stages
from .supervised import OWN
from .pipeline.dag import CAPTIONS, EXHIBITS, DagConfig, ablation_regimes, curve_file
from .tables import (
    Run, ablation_table, claims_table, coco_table, display, display_claims, imagenet_table, load_runs,
    motivation_claims, motivation_table, provenance_table,
)


DATASETS = {"imagenet": "ImageNet-1K", "mini-in": "mini-in (the ImageNet stand-in)", "coco": "COCO 2017",
            "mini-coco": "mini-coco (the COCO stand-in)", "own": "your labelled images"}


def write_table(table: pd.DataFrame, stem: Path, title: str, shown: pd.DataFrame | None = None) -> str:
    """Write ``stem``.csv (the numbers) and ``stem``.md/.tex/.html (``shown``, default :func:`eval.tables.display`;
    the HTML page under ``title``); returns the Markdown."""
    shown = display(table) if shown is None else shown
    markdown = shown.to_markdown(index=False)
    write_text(stem.with_suffix(".md"), markdown + "\n")
    write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
    write_text(stem.with_suffix(".tex"), shown.to_latex(index=False, escape=True))
    write_text(stem.with_suffix(".html"), TABLE_PAGE.format(title=html.escape(title),
                                                            table=shown.to_html(index=False, border=0)))
    return markdown


def detection_recipes(params: dict) -> tuple[dict[str, str], dict[str, str | None]]:
    """Each detection model's supervised weights, as the table names them, and its schedule if it is the
    paper's (1x, 3x; else None)."""
    configs = {m: branch_config(params, DetectionConfig, model=m) for m in params["detection_models"] or []}
    weights = {m: OWN_CLASSIFIER if c.supervised_weights == OWN else c.supervised_weights for m, c in configs.items()}
    return weights, {m: c.paper_schedule for m, c in configs.items()}


TABLE_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font-family: sans-serif; font-size: 13px; margin: 1em; }}
table {{ border-collapse: collapse; }}
th, td {{ border-bottom: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
</style></head><body><h2>{title}</h2>
{table}
</body></html>
"""


class Exhibits:
    """What Snakemake's report shows of the results folder: each table page and figure with its category and
    caption, every caption ending with the preset and seeds that made it."""

    def __init__(self, params: dict):
        seeds = ", ".join(map(str, params["seeds"]))
        self.made_by = (f"Made by the {params['preset']} preset: fine-tuning and detection seeds {seeds} (the arms "
                        f"paired by seed), each encoder pretrained once (seed {params['pretrain_seed']}).")
        self.entries: dict[str, dict[str, str]] = {}

    def add(self, name: str, category: str, caption: str) -> None:
        self.entries[name] = {"category": category, "caption": f"{caption} {self.made_by}"}

    def write(self, out: Path) -> None:
        """``exhibits.json`` (each file's category and caption) and ``captions.rst``: the caption template the
        report rule gives Snakemake, which renders the caption of the file at hand."""
        write_text(out / EXHIBITS, json.dumps(self.entries, indent=1, ensure_ascii=False) + "\n")
        cases = [f"{'if' if i == 0 else 'elif'} snakemake.wildcards.exhibit == {json.dumps(name)}"
                 for i, name in enumerate(self.entries)]
        lines = [line for case, entry in zip(cases, self.entries.values())
                 for line in (f"{{% {case} %}}", entry["caption"])]
        write_text(out / CAPTIONS, "\n".join([*lines, "{% endif %}", ""]))


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
    exhibits = Exhibits(params)
    weights, schedules = detection_recipes(params)
    claims = pd.concat([claims_table(params, runs, archs, schedules), motivation_claims(runs["motivation"])],
                       ignore_index=True)
    sections = [(f"Table 1: fine-tuning on {DATASETS[data.classification]}", "imagenet",
                 imagenet_table(runs["finetune"], archs),
                 "top-1 and top-5 (mean ± std over seeds) per model, label regime and init, beside the paper's "
                 "top-1.")]
    if runs["detection"]:
        sections.append((f"Table 2: Mask R-CNN on {DATASETS[data.detection]}", "coco",
                         coco_table(runs["detection"], archs, weights, schedules),
                         "box and mask AP (mean ± std over seeds) per model and init (scratch, supervised, SparK), "
                         "beside the paper's AP where the run follows the paper's schedule."))
    for model in params["ablation_models"]:
        for regime in ablation_regimes(params):
            table = ablation_table(runs["pretrain"], runs["finetune"], model, archs[model], list(params["ablations"]),
                                   regime)
            sections.append((f"Table 3: ablations on {model} ({regime} labels)", f"ablations_{model}_{regime}",
                             table, "fine-tuning top-1 of each pretraining variant, its paired difference to the "
                                    "method with the 95% interval, and its final pretraining loss, beside the "
                                    "paper's difference."))

    lines = [f"# SparK reproduction: results of the `{params['preset']}` preset", ""]
    if data.classification == "own":
        lines += [f"Runs on your own images (pretraining: {data.own.unlabelled}; labels: {data.own.labelled}): the "
                  "claims below answer whether SparK pretraining on them beats training from scratch and, where a "
                  "supervised arm ran, the supervised weights; the paper columns are for orientation only.", ""]
    elif data.classification != "imagenet" or data.detection != "coco":
        lines += ["These are small-scale runs on the generated mini benchmark (see DATA.md), not ImageNet/COCO: the "
                  "paper columns are for orientation, not comparison.", ""]
    figures.claims_forest(claims, out / "claims_forest.png")
    lines += ["## Paper claims", "", VERDICT_RULE, "",
              write_table(claims, out / "claims", "The paper's claims", display_claims(claims)), "",
              "![claims forest plot](claims_forest.png)", "", FOREST_CAPTION, ""]
    exhibits.add("claims.html", "Claims", "The paper's claims, each a paired difference over seeds (the paper's "
                 "direction positive) with its 95% interval and verdict; the motivation rows are bootstraps over "
                 "images.")
    exhibits.add("claims_forest.png", "Claims", FOREST_CAPTION)
    for title, stem, table, caption in sections:
        lines += [f"## {title}", "", write_table(table, out / stem, title), ""]
        exhibits.add(f"{stem}.html", "Paper tables", f"{title}: {caption}")
    lines += motivation_section(runs["motivation"], out, exhibits)
    lines += curves_section(runs, out, exhibits)
    figures.reconstruction_grid(runs["pretrain"], out / "reconstructions.png")
    exhibits.add("reconstructions.png", "Pretraining", RECONSTRUCTIONS)
    lines += ["## Pretraining", "", "![reconstructions](reconstructions.png)", "", RECONSTRUCTIONS, ""]
    knn_runs = [run for run in runs["pretrain"] if "knn_top1" in run.metrics]
    if knn_runs:
        figures.knn_curves(knn_runs, out / "pretrain_knn.png")
        exhibits.add("pretrain_knn.png", "Pretraining", KNN_CAPTION)
        lines += ["![k-NN monitor](pretrain_knn.png)", "", KNN_CAPTION, ""]
    lines += ["## Runs behind every cell", "",
              write_table(provenance_table(runs), out / "runs", "Runs behind every cell"), "",
              "## Sources of the reference columns", ""]
    exhibits.add("runs.html", "Runs", "Every run behind a table cell: its directory, commit, params hash, engine, "
                 "host, wall time, precision, hardware and versions, and whether it was pulled from a DVC remote.")
    lines += [f"- `{key}`: {text}" for key, text in reference.SOURCES.items()]
    exhibits.write(out)
    path = out / "REPORT.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


FOREST_CAPTION = ("The claims as a forest plot: each claim's difference (dot) with its 95% interval (bar; none with "
                  "one seed), coloured by verdict (green reproduced, red contradicted, grey inconclusive), and the "
                  "paper's own difference where it has the same comparison (hollow diamond: the model's architecture, "
                  "all labels, the paper's schedule); one panel per metric.")
RECONSTRUCTIONS = ("Each pretraining variant's reconstruction of held-out images (first seed): input, masked input, "
                   "reconstruction, and the reconstruction with the visible patches pasted back.")
KNN_CAPTION = ("The k-NN monitor: each pretraining run's k-NN top-1 on the encoder's features per epoch, from its "
               "initial weights' value (epoch 0, dashed).")
STAGE_NAMES = {"pretrain": "Pretraining", "finetune": "Fine-tuning", "detection": "Mask R-CNN"}


def curves_section(runs: dict[str, list[Run]], out: Path, exhibits: Exhibits) -> list[str]:
    """REPORT.md's training curves: for each stage's :class:`~eval.pipeline.stages.Curve`, the arms overlaid
    (mean and range over seeds), as a figure and as ``curves/*.tsv`` (dvc.yaml's top-level plots read those)."""
    lines = ["## Training curves", ""]
    for stage in training_stages():
        for curve in stage.curves:
            table = arm_curves(runs[stage.name], curve.metric)
            tsv = out / curve_file(stage.name, curve.metric)
            tsv.parent.mkdir(exist_ok=True)
            write_text(tsv, table.to_csv(sep="\t", index=False))
            if table.empty:  # no run logged it (the k-NN monitor off, no detection model)
                continue
            figure = tsv.with_suffix(".png").name
            figures.arm_curves(table, curve.step, curve.label, out / figure)
            caption = (f"{STAGE_NAMES[stage.name]}: {curve.label} per {curve.step}, the arms overlaid "
                       f"({'; '.join(dict.fromkeys(table['arm']))}): the mean over seeds as a line, their range as "
                       f"a band. dvc plots show draws the same data ({tsv.relative_to(out)}).")
            exhibits.add(figure, "Training curves", caption)
            lines += [f"![{stage.name} {curve.metric}]({figure})", "", caption, ""]
    return lines


def motivation_section(motivation: list[Run], out: Path, exhibits: Exhibits) -> list[str]:
    """REPORT.md's motivation part: every number of the motivation runs and their figures (copied beside it)."""
    title = "Motivation: zero-outing vs sparse encoding"
    lines = [f"## {title}", "",
             "These measure the paper's motivation for sparse encoding (pretraining's inputs through the pretrained "
             "encoder, dense on the zero-outed image vs sparse), not its headline numbers; the paper shows them as "
             "figures without a number. Differences are in the paper's direction, intervals bootstrapped over images.",
             "", write_table(motivation_table(motivation), out / "motivation", title), ""]
    exhibits.add("motivation.html", "Motivation", "Every motivation number per model and encoder: each measure under "
                 "zero-outing (dense) and sparse encoding, and their difference with its bootstrap interval over "
                 "images.")
    for run in motivation:
        for name, caption in MOTIVATION_FIGURES:
            copy = f"motivation_{run.branch.model}_{name}"
            shutil.copyfile(run.path / name, out / copy)
            text = f"{caption[0].upper()}{caption[1:]} ({run.branch.model}): a test of the motivation, not of the " \
                   "headline numbers."
            lines += [f"![{caption} ({run.branch.model})]({copy})", "", text, ""]
            exhibits.add(copy, "Motivation", text)
    return lines
