"""A branch's section: the base section of params.yaml with the branch's model, ablation variant or label regime
merged over it, then the job's dotted overrides. What a job reads, and what the DAG checks for every branch."""
from __future__ import annotations

import copy
from typing import Any, Iterable, TypeVar

from eval.arms import METHOD
from spark.config import ConfigError, Section, apply_override, merge

S = TypeVar("S", bound=Section)


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
