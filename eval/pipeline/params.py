"""The params file a job reads: one YAML file for every stage, dotted overrides, and each branch's section (the
base section with the branch's model, ablation variant or label regime merged over it). What a job reads, and what
the DAG checks for every branch."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

from eval.arms import METHOD
from spark.config import ConfigError, Section

S = TypeVar("S", bound=Section)


def load_params(path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read a params file and apply ``a.b.c=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    params = _parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return with_overrides(params, overrides)


def with_overrides(params: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``params`` with ``a.b.c=value`` overrides applied (``params`` itself is left as it is)."""
    params = copy.deepcopy(params)
    for item in overrides:
        apply_override(params, item)
    return params


def apply_override(params: dict[str, Any], item: str) -> None:
    """Set ``params[a][b][c] = value`` for ``item = "a.b.c=value"``; intermediate mappings must exist."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{item}': expected key.path=value")
    *parents, leaf = key.split(".")
    node = params
    for depth, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"override '{item}': no section {'.'.join(parents[: depth + 1])}")
        node = node[part]
    node[leaf] = _parse_yaml(text, f"override '{item}'")


def _parse_yaml(text: str, where: str) -> Any:
    """YAML, or one line saying where it is not (a tab in the indentation, an unclosed bracket)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f", line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML{at}: {problem}") from None


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def branch_section(params: dict[str, Any], name: str, model: str | None = None, variant: str | None = None,
                   regime: str | None = None) -> dict[str, Any]:
    """Section ``name`` for one DAG branch: the base section, then ``arch: model`` (a model is named by its timm
    architecture unless ``models[model][name]`` sets ``arch``), then ``models[model][name]``, then (pretraining
    only) the ablation ``ablations[variant]``, then (fine-tuning only) the label regime ``label_regimes[regime]``.
    Returns a new ``params`` with that section resolved."""
    if name not in params:
        raise ConfigError(f"params: missing section '{name}'")
    section = params[name]
    if model is not None:
        models = params.get("models") or {}
        if model not in models:
            raise ConfigError(f"params: models.{model}: unknown model (known: {', '.join(models) or 'none'})")
        section = merge({**section, "arch": model}, (models[model] or {}).get(name) or {})
    for key, choice, kind, builtin in (("ablations", variant, "variant", [METHOD]),
                                       ("label_regimes", regime, "label regime", [])):
        if choice is None:
            continue
        choices = params.get(key) or {}
        if choice not in [*builtin, *choices]:
            raise ConfigError(f"params: {key}.{choice}: unknown {kind} (known: {', '.join([*builtin, *choices])})")
        section = merge(section, choices.get(choice) or {})
    return {**params, name: section}


def branch_config(params: dict[str, Any], schema: type[S], overrides: Iterable[str] = (), *,
                  model: str | None = None, variant: str | None = None, regime: str | None = None) -> S:
    """The validated ``schema`` section for one branch: :func:`branch_section`, then dotted ``overrides``
    (``pretrain.seed=3``), then ``schema.parse``."""
    resolved = copy.deepcopy(branch_section(params, schema.SECTION, model, variant, regime))  # overrides stay local
    for item in overrides:
        apply_override(resolved, item)
    return schema.parse(resolved)
