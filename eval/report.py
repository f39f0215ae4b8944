"""The tables stage: ``python -m eval.report --params params.yaml`` writes ``results/<preset>/``.

Markdown, CSV and LaTeX for each table, the figures, and ``REPORT.md`` tying every cell to its run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from spark.config import ConfigError, branch_section, load_params, parse_section
from spark.data.config import DataConfig
from spark.io import write_text

from . import figures, reference
from .dag import check_shape, layout
from .tables import ablation_table, coco_table, imagenet_table, load_runs, provenance_table


DATASETS = {"imagenet": "ImageNet-1K", "mini-in": "mini-in (the ImageNet stand-in)", "coco": "COCO 2017",
            "mini-coco": "mini-coco (the COCO stand-in)"}


def write_table(table: pd.DataFrame, stem: Path) -> str:
    """Write ``stem``.md/.csv/.tex; returns the Markdown."""
    markdown = table.to_markdown(index=False)
    write_text(stem.with_suffix(".md"), markdown + "\n")
    write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
    write_text(stem.with_suffix(".tex"), table.to_latex(index=False, escape=True))
    return markdown


def report(params: dict, out: Path, root: Path = Path(".")) -> Path:
    check_shape(params)
    runs = load_runs(params, root)
    archs = {m: branch_section(params, "finetune", model=m)["finetune"]["arch"] for m in params["models"]}
    out.mkdir(parents=True, exist_ok=True)
    data = parse_section(params, "data", DataConfig)
    sections = [
        (f"Table 1: fine-tuning on {DATASETS[data.classification]}", "imagenet",
         imagenet_table(runs["finetune"], archs)),
        (f"Table 2: Mask R-CNN on {DATASETS[data.detection]}", "coco", coco_table(runs["detection"], archs)),
    ]
    for model in params["ablation_models"]:
        table = ablation_table(runs["pretrain"], runs["finetune"], model, list(params["ablations"]))
        sections.append((f"Table 3: ablations on {model}", f"ablations_{model}", table))
    figures.loss_curves(runs["pretrain"], out / "pretrain_loss.png")
    figures.reconstruction_grid(runs["pretrain"], out / "reconstructions.png")

    lines = [f"# SparK reproduction: results of the `{params['preset']}` preset", ""]
    if data.classification != "imagenet" or data.detection != "coco":
        lines += ["These are small-scale runs on the generated mini benchmark (see DATA.md), not ImageNet/COCO: the "
                  "paper columns are for orientation, not comparison.", ""]
    for title, stem, table in sections:
        lines += [f"## {title}", "", write_table(table, out / stem), ""]
    lines += ["## Figures", "", "![pretraining loss](pretrain_loss.png)", "", "![reconstructions](reconstructions.png)", "",
              "## Runs behind every cell", "", write_table(provenance_table(runs), out / "runs"), "",
              "## Sources of the reference columns", ""]
    lines += [f"- `{key}`: {text}" for key, text in reference.SOURCES.items()]
    path = out / "REPORT.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, help="default: results/<preset>")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        path = report(params, args.out or Path(layout(params).results))
    except (ConfigError, FileNotFoundError) as err:
        print(f"report: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
