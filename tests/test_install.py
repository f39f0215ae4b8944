"""`pip install .` is the method library: `spark` imports, builds SparK and pretrains with torch, timm and the light
core dependencies alone; what only the pipeline's stages need (benchmark synthesis, fine-tuning's tables,
Detectron2, the workflow engines) comes with the extras."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
DISTRIBUTION_OF = {"torch": "torch", "torchvision": "torchvision", "timm": "timm", "numpy": "numpy", "yaml": "pyyaml",
                   "tqdm": "tqdm", "PIL": "pillow", "safetensors": "safetensors"}  # import name -> the core distribution that provides it
OPTIONAL = {"dvclive": "pipeline"}  # imported only when installed (spark.engine.records), and from which extra
EXTRAS_ONLY = ["pandas", "scipy", "skimage", "sklearn", "pycocotools", "matplotlib", "dvclive", "tabulate", "jinja2",
               "snakemake", "dvc", "detectron2"]


def third_party_imports(package: Path) -> set[str]:
    names = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"spark", "__future__"}


def test_spark_imports_only_the_core_dependencies():
    imported = third_party_imports(REPO / "spark")
    assert imported == set(DISTRIBUTION_OF) | set(OPTIONAL), sorted(imported)
    core = {Requirement(r).name.lower() for r in PROJECT["dependencies"]}
    assert {DISTRIBUTION_OF[name] for name in imported - set(OPTIONAL)} == core
    for name, extra in OPTIONAL.items():
        assert any(Requirement(r).name == name for r in PROJECT["optional-dependencies"][extra])


def test_spark_builds_trains_and_pretrains_without_the_extras(tmp_path):
    """In a process where every extras-only package fails to import: a forward/backward of SparK and a one-epoch
    pretraining run (its per-epoch history without dvclive's curves)."""
    script = textwrap.dedent(f"""
        import sys
        BLOCKED = {EXTRAS_ONLY!r} + ["eval"]

        class NotInstalled:  # every finder sees nothing of the blocked packages, as if they were not installed
            def __init__(self, finder):
                self.finder = finder

            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    return None
                return self.finder.find_spec(name, path, target)

            def __getattr__(self, name):
                return getattr(self.finder, name)

        sys.meta_path[:] = [NotInstalled(finder) for finder in sys.meta_path]
        import importlib.util
        assert all(importlib.util.find_spec(name) is None for name in BLOCKED)
        import numpy as np, torch
        from PIL import Image
        from spark.model import SparKConfig, build_spark
        from spark.pretrain import PretrainConfig, pretrain

        torch.manual_seed(0)
        model = build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64))
        loss = model(torch.randn(4, 3, 64, 64))
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        for i in range(8):
            Image.fromarray(np.full((64, 64, 3), 30 * i, np.uint8)).save(f"{{sys.argv[1]}}/{{i}}.png")
        config = PretrainConfig(data=sys.argv[1], arch="resnet18", input_size=64, decoder_width=64, epochs=1,
                                warmup_epochs=0, global_batch=4, num_workers=0, vis_images=2)
        pretrain(config, sys.argv[2])
        print(f"loss {{loss.item():.4f}}")
    """)
    (tmp_path / "images").mkdir()
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "images"), str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("loss ")
    run = tmp_path / "run"
    assert {"encoder.pth", "metrics.json", "reconstruction.png", "checkpoint.pth"} <= {p.name for p in run.iterdir()}
    assert not (run / "dvclive").exists() and "dvclive is not installed" in (run / "train.log").read_text()
