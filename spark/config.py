"""A params section as a dataclass: its keys typed, its bounds on its fields, validated up front.

Each stage declares its section as a :class:`Section` dataclass (``PretrainConfig``, ``FinetuneConfig`` ...) and
parses it with ``Config.parse(params)``. A field states its bounds in its annotation and its choices as a
``Literal``::

    mask_ratio: Annotated[float, Range(0, 1, "()")] = 0.6

:func:`check_fields` checks them whenever the dataclass is built, from params or in Python; ``__post_init__`` adds
only the rules that relate fields. A bad value fails before any data is read, with one line naming the key::

    params: pretrain.mask_ratio: must be in (0, 1), got 1.5
"""
from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from typing import Annotated, Any, ClassVar, Iterable, Literal, TypeVar, Union

from .errors import InputError

T = TypeVar("T")
_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE]\d+")


class ConfigError(InputError, ValueError):
    """A bad configuration value; the message names the offending key."""


def require(condition: bool, key: str, message: str) -> None:
    """Raise a :class:`ConfigError` for ``key`` unless ``condition`` holds (for the cross-field rules of a
    ``__post_init__``)."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


class Constraint:
    """What one field's value must satisfy, declared in its annotation (``Annotated[int, AtLeast(1)]``); ``str``
    says it in the error message: ``must be {constraint}, got {value!r}``."""

    def holds(self, value: Any) -> bool:
        raise NotImplementedError

    def check(self, value: Any, key: str) -> None:
        if not self.holds(value):
            raise ConfigError(f"{key}: must be {self}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Range(Constraint):
    """``low <= value <= high``; ``bounds`` opens either end as in interval notation (``"[)"``: ``low <= value <
    high``)."""

    low: float
    high: float
    bounds: Literal["[]", "[)", "(]", "()"] = "[]"

    def holds(self, value: Any) -> bool:
        left, right = self.bounds
        above = self.low < value if left == "(" else self.low <= value
        below = value < self.high if right == ")" else value <= self.high
        return above and below

    def __str__(self) -> str:
        return f"in {self.bounds[0]}{self.low}, {self.high}{self.bounds[1]}"


@dataclasses.dataclass(frozen=True)
class AtLeast(Constraint):
    """``value >= low``; with ``strict``, ``value > low`` (:func:`Above`)."""

    low: float
    strict: bool = False

    def holds(self, value: Any) -> bool:
        return value > self.low if self.strict else value >= self.low

    def __str__(self) -> str:
        return f"{'>' if self.strict else '>='} {self.low}"


def Above(low: float) -> AtLeast:
    """``value > low``: a strict :class:`AtLeast`, named like the other constraints it sits among."""
    return AtLeast(low, strict=True)


class OneOf(Constraint):
    """One of ``choices``: what a ``Literal`` field declares, or names known only at run time (a registry's keys)."""

    def __init__(self, *choices: Any) -> None:
        self.choices = choices

    def holds(self, value: Any) -> bool:
        return value in self.choices

    def __str__(self) -> str:
        return f"one of {', '.join(map(repr, self.choices))}"


DropPathRate = Annotated[float, Range(0, 1, "[)")]  # stochastic depth of a timm encoder, in every stage that has one


def check_fields(config: Any) -> None:
    """Check each field of the dataclass ``config`` against the constraints its annotation declares (``Annotated``
    markers, a ``Literal``'s choices); a ``ConfigError`` names the field. None (an optional field left unset)
    satisfies them."""
    for name, constraints in _constraints(type(config)).items():
        value = getattr(config, name)
        for constraint in constraints if value is not None else ():
            constraint.check(value, name)


@functools.cache
def _constraints(schema: type) -> dict[str, tuple[Constraint, ...]]:
    """Each field's constraints as declared in ``schema`` and in every base that declares the field: a subclass
    that redeclares a field to give it another default keeps its base's bounds (and may add its own, checked
    first)."""
    names = {field.name for field in dataclasses.fields(schema)}
    found: dict[str, list[Constraint]] = {}
    for cls in (c for c in schema.__mro__ if dataclasses.is_dataclass(c)):
        hints = typing.get_type_hints(cls, include_extras=True)
        for name in names & {field.name for field in dataclasses.fields(cls)}:
            for constraint in _declared(hints[name]):
                if constraint not in found.setdefault(name, []):
                    found[name].append(constraint)
    return {name: tuple(constraints) for name, constraints in found.items() if constraints}


def _declared(hint: Any) -> tuple[Constraint, ...]:
    """The constraints one annotation declares: its ``Annotated`` markers and a ``Literal``'s choices."""
    constraints: tuple[Constraint, ...] = ()
    if typing.get_origin(hint) is Annotated:
        hint, *extras = typing.get_args(hint)
        constraints = tuple(c for c in extras if isinstance(c, Constraint))
    if typing.get_origin(hint) is Literal:
        constraints = (OneOf(*typing.get_args(hint)), *constraints)
    return constraints


class Checked:
    """Base of a config dataclass: building it checks its fields (:func:`check_fields`). A subclass with rules
    that relate fields calls ``check_fields(self)`` first in its own ``__post_init__``, then :func:`require` (not
    ``super()``: in a section that is also a ``TrainingConfig``, that resolves to the run's ``__post_init__``)."""

    def __post_init__(self) -> None:
        check_fields(self)


class Section(Checked):
    """Base of a section's dataclass: ``SECTION`` names it in params.yaml, :meth:`parse` validates it there."""

    SECTION: ClassVar[str]

    @classmethod
    def parse(cls: type[T], params: dict[str, Any]) -> T:
        return parse_section(params, cls.SECTION, cls)


def parse_section(params: dict[str, Any], name: str, schema: type[T]) -> T:
    """Validate ``params[name]`` against the dataclass ``schema``; errors read ``params: name.key: ...``."""
    if name not in params:
        raise ConfigError(f"params: missing section '{name}'")
    try:
        return from_dict(schema, params[name], name)
    except ConfigError as err:
        raise ConfigError(f"params: {err}") from None


AUTO = "auto"


def parse_with_recipe(params: dict[str, Any], schema: type[T], recipes: typing.Mapping[str, Any],
                      default_arch: str) -> T:
    """Section ``schema.SECTION`` merged over its recipe (a dataclass of ``recipes``), then validated: the keys the
    section sets win, and ``recipe`` (``auto``: the one named like ``arch``) is resolved to the recipe's name."""
    name = schema.SECTION
    if name not in params:
        raise ConfigError(f"params: missing section '{name}'")
    section = params[name]
    if isinstance(section, dict):  # anything else is for from_dict to reject
        recipe = section.get("recipe", AUTO)
        if recipe == AUTO:
            arch = section.get("arch", default_arch)
            if arch not in recipes:
                raise ConfigError(f"params: {name}.recipe: no recipe is named like arch {arch!r}; name one of "
                                  f"{', '.join(recipes)}")
            recipe = arch
        if recipe not in recipes:
            raise ConfigError(f"params: {name}.recipe: must be 'auto' or one of {', '.join(recipes)}, got {recipe!r}")
        section = {**dataclasses.asdict(recipes[recipe]), **section, "recipe": recipe}
    return parse_section({**params, name: section}, name, schema)


def from_dict(schema: type[T], raw: Any, prefix: str) -> T:
    """Build dataclass ``schema`` from a mapping, checking keys and types (building it checks the values);
    defaults fill missing keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{_key(prefix, unknown[0])}: unknown key (known: {', '.join(fields)})")
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for name in fields:
        if name in raw:
            kwargs[name] = _coerce(hints[name], raw[name], _key(prefix, name))
        elif fields[name].default is dataclasses.MISSING and fields[name].default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_key(prefix, name)}: required key is missing")
    try:
        return schema(**kwargs)
    except ConfigError as err:
        raise ConfigError(_key(prefix, str(err))) from None


def parse_top_level(params: dict[str, Any], schema: type[T]) -> T:
    """Validate the top-level keys of ``params`` that the dataclass ``schema`` declares (the others are sections);
    errors read ``params: key: ...``."""
    names = {f.name for f in dataclasses.fields(schema)}
    try:
        return from_dict(schema, {key: value for key, value in params.items() if key in names}, "")
    except ConfigError as err:
        raise ConfigError(f"params: {err}") from None


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def to_dict(config: Any) -> dict[str, Any]:
    """The plain-YAML form of a config dataclass (what run directories and checkpoints record): tuples as lists."""
    return _plain(dataclasses.asdict(config))


def changed_keys(config: Any, recorded: dict[str, Any], resumable: Iterable[str] = ()) -> list[str]:
    """Keys of ``config`` whose value differs from the ``recorded`` :func:`to_dict` form, except ``resumable``
    ones (those that change speed or bookkeeping, not the result): what forbids resuming a run. A key the record
    lacks (a field added since it was written) counts as recorded with its default."""
    current, resumable = to_dict(config), set(resumable)
    defaults = _plain(_defaults(type(config)))
    return sorted(k for k in current.keys() | recorded.keys()
                  if k not in resumable and current.get(k) != recorded.get(k, defaults.get(k)))


def _defaults(schema: type) -> dict[str, Any]:
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(schema)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {hint}")
    if origin is Literal:
        OneOf(*args).check(value, key)
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {k: _coerce(args[1] if args else Any, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads `1e12` (no exponent sign) as a string
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (bool, str) and isinstance(value, hint):
        return value
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
