"""Each stage's code dependencies: what its entry point can import, spelled the same in dvc.yaml and the Snakefile."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eval.pipeline.stage_code import PACKAGES, code_files, entry_modules, imported_files, stage_code
from eval.pipeline.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
DVC_STAGE = {"prepare": "prepare", "pretrain": "pretrain", "pretrain_ablation": "pretrain",
             "finetune_scratch": "finetune", "finetune": "finetune", "finetune_ablation": "finetune",
             "detection_scratch": "detection", "detection": "detection", "motivation": "motivation", "report": "report"}


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_imports_are_followed_inside_functions_relative_and_through_package_inits(tmp_path):
    write(tmp_path, {
        "spark/__init__.py": "from spark.exported import Name\n",
        "spark/a.py": "def f():\n    from .b import g\n",
        "spark/b.py": "from spark import Name\nimport os\ndef g(): pass\n",
        "spark/exported.py": "from . import sub\n",
        "spark/sub/__init__.py": "",
        "spark/sub/deep.py": "",
        "spark/unused.py": "",
        "eval/__init__.py": "",
        "eval/main.py": "import spark.a\nfrom eval import helper\n",
        "eval/helper.py": "",
    })
    assert imported_files(("eval.main",), tmp_path) == [
        "eval/__init__.py", "eval/helper.py", "eval/main.py", "spark/__init__.py", "spark/a.py", "spark/b.py",
        "spark/exported.py", "spark/sub/__init__.py"]


def test_a_folder_is_named_only_when_the_stage_imports_all_of_it():
    for stage in STAGES:
        files = set(imported_files(entry_modules(stage)))
        declared = set(code_files(stage))
        assert files <= declared, stage
        if stage != "report":  # the report takes all the code (it validates every section)
            assert declared == files, stage


def test_fine_tuning_code_does_not_rerun_pretraining_and_vice_versa():
    pretrain, finetune, detection = (set(code_files(s)) for s in ("pretrain", "finetune", "detection"))
    assert "eval/finetune/loss.py" in finetune and "eval/finetune/loss.py" not in pretrain | detection
    assert "spark/pretrain/optim.py" in pretrain and "spark/pretrain/optim.py" not in finetune | detection
    assert "spark/sparse.py" in pretrain & finetune & detection  # the encoder is everyone's
    assert not {"spark/sparse.py", "spark/engine/__init__.py"} & set(code_files("prepare"))  # but not the data's
    assert set(code_files("report")) == {p.relative_to(REPO).as_posix() for d in PACKAGES
                                         for p in (REPO / d).rglob("*.py")}


@pytest.mark.parametrize("name", DVC_STAGE)
def test_dvc_yaml_lists_each_stages_code(name):
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]
    code = [d for d in stage.get("deps", []) if d.split("/")[0] in PACKAGES]
    assert code == stage_code(DVC_STAGE[name]), f"dvc.yaml {name}: deps should list {stage_code(DVC_STAGE[name])}"
