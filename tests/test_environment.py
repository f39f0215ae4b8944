"""The software environment: one Detectron2 install path (the sha256-pinned installer, also run by the conda env's
post-deploy script), conda envs that repeat pyproject's dependencies under the lock, a lock that satisfies
pyproject, and every imported package declared. Static checks only: no network, no conda, no install."""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
ENVS = REPO / "workflow/envs"
ENV_NAMES = ("spark", "detectron2")
INSTALLER = REPO / "workflow/scripts/install_detectron2.sh"
PATCHER = REPO / "workflow/scripts/patch_detectron2.py"
POST_DEPLOY = ENVS / "detectron2.post-deploy.sh"
LOCK = REPO / "requirements.lock"
LOCK_OPTION = "-c ../../requirements.lock"
# Installed by workflow/scripts/install_detectron2.sh, not by pip from pyproject: distributions and the module.
INSTALLER_MANAGED = {"detectron2", "pb1-detectron2"}
INSTALLER_MODULES = {"detectron2"}
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def env_file(name: str) -> dict:
    return yaml.safe_load((ENVS / f"{name}.yaml").read_text())


def pip_section(env: dict) -> list[str]:
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def declared_requirements() -> list[Requirement]:
    """pyproject's dependencies and extras, without the extras that only name the project itself."""
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    reqs += [Requirement(r) for extra in PROJECT["optional-dependencies"].values() for r in extra]
    return [r for r in reqs if canonicalize_name(r.name) != canonicalize_name(PROJECT["name"])]


def lock_pins() -> dict[str, str]:
    pins = {}
    for number, line in enumerate(LOCK.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;+@]+)", line)
        assert match, f"requirements.lock:{number}: not a plain name==version pin (no local label): {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"requirements.lock:{number}: {name} pinned twice"
        pins[name] = match.group(2)
    return pins


def installer_pin() -> tuple[str, str]:
    text = INSTALLER.read_text()
    requirement = re.search(r'^D2_REQUIREMENT="([^"]+)"$', text, re.M)
    sha256 = re.search(r'^D2_SHA256="([^"]*)"$', text, re.M)
    assert requirement and sha256, "install_detectron2.sh must set D2_REQUIREMENT and D2_SHA256"
    return requirement.group(1), sha256.group(1)


def test_env_files_and_post_deploy_script():
    for name in ENV_NAMES:
        assert (ENVS / f"{name}.yaml").is_file(), name
    # Snakemake's convention: <env>.post-deploy.sh beside <env>.yaml, run with the env activated.
    assert POST_DEPLOY.is_file()
    assert POST_DEPLOY.stat().st_mode & stat.S_IXUSR and os.access(POST_DEPLOY, os.X_OK), "not executable"
    text = POST_DEPLOY.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")  # Snakemake takes the interpreter from the shebang
    assert "set -euo pipefail" in text
    body = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert any("workflow/scripts/install_detectron2.sh" in line for line in body)
    assert any(re.search(r'bash "\$INSTALLER" "\$CONDA_PREFIX/bin/python"', line) for line in body)
    for script in (POST_DEPLOY, INSTALLER):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"


def test_conda_environments_match_pyproject():
    lock_digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    for name in ENV_NAMES:
        env = env_file(name)
        pip = pip_section(env)
        requirements = [r for r in pip if not r.startswith("-")]
        pipeline = PROJECT["dependencies"] + PROJECT["optional-dependencies"]["pipeline"]
        assert sorted(requirements) == sorted(pipeline), name
        # The lock as constraints: conda runs pip from the env file's directory, where the path resolves.
        assert LOCK_OPTION in pip, f"{name}: the pip section must start with '{LOCK_OPTION}'"
        assert (ENVS / LOCK_OPTION.split()[1]).resolve() == LOCK
        assert [r for r in pip if r.startswith("-")] == [LOCK_OPTION], name
        # Snakemake hashes the yaml, not the lock: the stamp makes a changed lock rebuild the env.
        stamp = re.search(r"^# requirements\.lock sha256: (\S+)$", (ENVS / f"{name}.yaml").read_text(), re.M)
        assert stamp and stamp.group(1) == lock_digest, (
            f"{name}.yaml: stamp '# requirements.lock sha256: {lock_digest}' (make lock writes it)")
        python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
        minimum = PROJECT["requires-python"].removeprefix(">=")
        assert tuple(map(int, python[7:].split("."))) >= tuple(map(int, minimum.split("."))), name
        assert not any("detectron2" in r for r in pip), f"{name}: Detectron2 comes from the installer only"
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm" and "snakemake-executor-plugin-slurm" in " ".join(
        PROJECT["optional-dependencies"]["workflow"])


VCS_URL = re.compile(r"(?:git|hg|svn|bzr)\+[a-z]+://\S+", re.I)
PINNED_REF = re.compile(r"@(?:[0-9a-f]{40}|v?\d+(?:\.\d+)+)(?:#\S*)?$")  # a full commit, or a release tag


def test_no_unpinned_vcs_requirement_in_envs():
    found = []
    for path in sorted(ENVS.iterdir()):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for url in VCS_URL.findall(line):
                found.append(url)
                assert PINNED_REF.search(url.split("://", 1)[1]), (
                    f"{path.name}:{number}: {url} names no tag or commit")
    assert not VCS_URL.search("pip: - pb1-detectron2==0.6") and VCS_URL.search("git+https://x/y.git")
    assert not PINNED_REF.search("github.com/x/y.git") and not PINNED_REF.search("github.com/x/y.git@main")
    assert PINNED_REF.search("github.com/x/y.git@v0.6") and PINNED_REF.search("x/y.git@" + "a" * 40)


def test_lock_covers_and_satisfies_pyproject():
    pins = lock_pins()
    for req in declared_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements.lock pins no {req.name} (run `make lock`)"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (
            f"requirements.lock has {name}=={pins[name]}, outside pyproject's {req}")
    assert not set(pins) & {canonicalize_name(PROJECT["name"]), *INSTALLER_MANAGED}
    assert not set(pins) & {"pip", "setuptools", "wheel"}  # left to pip and the installer
    # Everyone installs through the lock.
    makefile = (REPO / "Makefile").read_text()
    ready = re.search(r"^\$\(VENV\)/\.ready:(.*?)\n\t", makefile, re.M | re.S)
    assert ready and "$(LOCK)" in ready.group(1) and "LOCK := requirements.lock" in makefile
    assert "pip install -q -c $(LOCK) -e '.[dev]'" in makefile
    assert 'LOCK="$HERE/../../requirements.lock"' in INSTALLER.read_text()


def test_installer_verifies_the_pinned_sdist():
    requirement, sha256 = installer_pin()
    assert requirement == "pb1-detectron2==0.6"  # Detectron2 v0.6, the version the SparK authors used
    assert re.fullmatch(r"[0-9a-f]{64}", sha256), sha256
    text = INSTALLER.read_text()
    # pip checks the archive before running its setup.py; then the script checks the file it unpacks.
    assert '--hash=sha256:$D2_SHA256' in text
    assert re.search(r'\[\[ \$actual == "\$D2_SHA256" \]\] *\\\n *\|\| die "sha256 mismatch', text)
    assert "hashlib.sha256" in text
    assert "setuptools<81" not in text and "git+" not in text
    # The post-deploy script repeats the pin and patch level, so that Snakemake (which hashes it, not the
    # installer) rebuilds the env when either changes.
    spec = importlib.util.spec_from_file_location("patch_detectron2", PATCHER)
    patcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(patcher)
    pin = f"# pin: {requirement} sha256={sha256} patch-level={patcher.PATCH_LEVEL}"
    assert pin in POST_DEPLOY.read_text().splitlines(), f"detectron2.post-deploy.sh needs the line {pin!r}"


def test_patcher_removes_pkg_resources_from_model_zoo(tmp_path):
    """Fix 6 on a stand-in of the two files it touches (the real sdist is checked by the installer's own run)."""
    spec = importlib.util.spec_from_file_location("patch_detectron2", PATCHER)
    patcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(patcher)
    zoo = tmp_path / "detectron2/model_zoo/model_zoo.py"
    zoo.parent.mkdir(parents=True)
    zoo.write_text('import os\nimport pkg_resources\nimport torch\n\n\ndef get_config_file(config_path):\n'
                   '    cfg_file = pkg_resources.resource_filename(\n'
                   '        "detectron2.model_zoo", os.path.join("configs", config_path)\n    )\n'
                   '    return cfg_file\n')
    patcher.model_zoo_without_pkg_resources(tmp_path)
    assert "pkg_resources" not in zoo.read_text()
    namespace: dict = {"__file__": str(zoo)}
    exec(compile(zoo.read_text().replace("import torch\n", ""), str(zoo), "exec"), namespace)
    assert namespace["get_config_file"]("COCO/x.yaml") == str(zoo.parent / "configs/COCO/x.yaml")
    with pytest.raises(patcher.PatchError, match="expected exactly one .* found 0"):
        patcher.model_zoo_without_pkg_resources(tmp_path)  # an unexpected source is refused


def imported_top_level_modules() -> dict[str, set[str]]:
    roots = ["spark", "eval", "tests", "bench", "workflow"]
    found: dict[str, set[str]] = {}
    for path in sorted(p for root in roots for p in (REPO / root).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def test_every_imported_package_is_declared():
    local = {"spark", "eval", "tests", "bench", "workflow"} | {p.stem for p in (REPO / "tests").glob("*.py")}
    local |= {p.stem for p in (REPO / "bench").glob("*.py")} | {p.stem for p in (REPO / "workflow").rglob("*.py")}
    declared = {canonicalize_name(r.name) for r in declared_requirements()}
    distributions = importlib.metadata.packages_distributions()
    undeclared = []
    for module, files in sorted(imported_top_level_modules().items()):
        if module in sys.stdlib_module_names or module in local or module in INSTALLER_MODULES:
            continue
        names = {canonicalize_name(d) for d in distributions.get(module, [])}
        if not names & declared:
            undeclared.append(f"{module} (distribution {sorted(names) or 'not installed'}; {sorted(files)[0]})")
    assert not undeclared, "imported but not declared in pyproject.toml: " + ", ".join(undeclared)
