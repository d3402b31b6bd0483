"""Nested dataclass configs, and the absl flags derived from their fields.

A run's configuration is a tree of small dataclasses (`TrainConfig.space`,
`TrainConfig.sampling`, ...). Every leaf field is declared once with
`option(default, help=..., choices=..., minimum=...)`; the command-line tools
derive their flags from those fields (`define_flags`, `from_flags`), so a
flag's name, type, default, help, choices and range can never drift from the
config, and `check_declared` checks every value against its declaration. A leaf's flag is its
field name, which is unique across the tree: flagfiles stay flat
(`--min_width=0.25`, `--flops_targets=2,11,1`).

The same walk gives the JSON form of a config (`to_dict`, `from_dict`) that a
job directory's `run.json` records.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing

from pss_tf import checks
from pss_tf.errors import ConfigError

_HELP = "help"
_CHOICES = "choices"
_RESUMABLE = "resumable"
_REPEATED = "repeated"
_BOUNDS = "bounds"
_REQUIRED = "required"
_PATH = "path"


def option(
    default=dataclasses.MISSING,
    *,
    help: str,
    choices=(),
    resumable: bool = False,
    repeated: bool = False,
    required: bool = False,
    path: bool = False,
    minimum=None,
    maximum=None,
    above=None,
    below=None,
):
    """A leaf field: its default, its flag's help, allowed values, and whether a
    resumed run may change it without starting a different experiment.

    A number's range is `minimum`/`maximum` (inclusive) or `above`/`below`
    (exclusive); the flag's help states it (`pss_tf.checks.Bounds`). A
    `required` field must not be empty. A `path` field's flag expands `~` and
    `$VARIABLES` (`expand_path`). A tuple
    field's flag takes comma-separated values, or with `repeated` one value per
    use of the flag (values that may hold commas, such as JSON).
    """
    bounds = checks.Bounds(minimum, maximum, above, below)
    metadata = {
        _HELP: help, _CHOICES: tuple(choices), _RESUMABLE: resumable, _REPEATED: repeated, _BOUNDS: bounds,
        _REQUIRED: required, _PATH: path,
    }
    if isinstance(default, (list, dict, set)):
        raise TypeError("option: use a tuple default, configs are compared and hashed by value")
    return dataclasses.field(default=default, metadata=metadata)


def group(cls):
    """A field holding a nested config group, default-constructed."""
    return dataclasses.field(default_factory=cls)


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One leaf field: its path from the root (`("space", "min_width")`) and type."""

    path: tuple[str, ...]
    field: dataclasses.Field
    type: object

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def help(self) -> str:
        return self.field.metadata.get(_HELP, "")

    @property
    def choices(self) -> tuple:
        return self.field.metadata.get(_CHOICES, ())

    @property
    def bounds(self) -> checks.Bounds:
        return self.field.metadata.get(_BOUNDS, checks.Bounds())

    @property
    def required(self) -> bool:
        return self.field.metadata.get(_REQUIRED, False)

    @property
    def is_path(self) -> bool:
        """A file or directory on this machine: its flag expands `~` and `$VARIABLES`."""
        return self.field.metadata.get(_PATH, False)

    @property
    def resumable(self) -> bool:
        return self.field.metadata.get(_RESUMABLE, False)

    @property
    def repeated(self) -> bool:
        return self.field.metadata.get(_REPEATED, False)


class Declared:
    """What every config class of `option` fields shares (a base of the frozen dataclasses)."""

    def replace(self, **changes):
        """A copy with leaf fields changed by name: `config.replace(epochs=2)`."""
        return replace(self, **changes)


@functools.lru_cache(maxsize=None)
def leaves(cls) -> tuple[Leaf, ...]:
    """Every leaf of the config class `cls`, depth first, in declaration order."""
    hints = typing.get_type_hints(cls)
    found = []
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            found.extend(Leaf((field.name,) + leaf.path, leaf.field, leaf.type) for leaf in leaves(kind))
        else:
            found.append(Leaf((field.name,), field, kind))
    names = [leaf.name for leaf in found]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise TypeError(f"{cls.__name__}: leaf names must be unique to become flags, repeated: {repeated}")
    return tuple(found)


def _base(kind):
    """(scalar type, is_tuple, optional) of an annotation like `tuple[float, ...]` or `str | None`."""
    args = typing.get_args(kind)
    optional = type(None) in args
    if optional:
        kind = next(a for a in args if a is not type(None))
    if typing.get_origin(kind) is tuple:
        return typing.get_args(kind)[0], True, optional
    return kind, False, optional


def _coerce(leaf: Leaf, value):
    """A JSON or flag value as the leaf's type; ConfigError naming the field otherwise."""
    scalar, is_tuple, optional = _base(leaf.type)
    if value is None and optional:
        return None
    try:
        if is_tuple:
            items = value.split(",") if isinstance(value, str) and not leaf.repeated else value
            items = [items] if isinstance(items, str) else list(items)
            return tuple(scalar(v.strip()) if isinstance(v, str) else scalar(v) for v in items if v != "")
        if scalar is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if scalar is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
            raise TypeError
        return scalar(value)
    except (TypeError, ValueError):
        kind = f"a list of {scalar.__name__}" if is_tuple else scalar.__name__
        raise ConfigError(leaf.name, f"expected {kind}, got {value!r}") from None


def to_dict(config) -> dict:
    """The nested JSON form of a config (tuples become lists)."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return list(value) if isinstance(value, tuple) else value

    return plain(config)


def from_dict(cls, data: dict, where: str = "config"):
    """Builds `cls` from its nested JSON form; unknown fields are refused."""
    if not isinstance(data, dict):
        raise ConfigError(None, f"{where}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(None, f"{where}: unknown field(s) {unknown}")
    values = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = from_dict(kind, value, f"{where}.{name}")
        else:
            values[name] = _coerce(Leaf((name,), fields[name], kind), value)
    return cls(**values)


def leaf_values(config) -> dict:
    """`{leaf name: value}` of a config: the flat view flags and diffs work on."""
    values = {}
    for leaf in leaves(type(config)):
        value = config
        for part in leaf.path:
            value = getattr(value, part)
        values[leaf.name] = value
    return values


def replace(config, /, **changes):
    """A copy of a nested config with leaves changed by name (`replace(c, min_width=0.3)`)."""
    by_name = {leaf.name: leaf for leaf in leaves(type(config))}
    unknown = sorted(set(changes) - set(by_name))
    if unknown:
        raise TypeError(f"replace: {type(config).__name__} has no field(s) {unknown}")
    grouped: dict[str, dict] = {}
    top = {}
    for name, value in changes.items():
        path = by_name[name].path
        if len(path) == 1:
            top[name] = value
        else:
            grouped.setdefault(path[0], {})[name] = value
    for head, sub in grouped.items():
        top[head] = replace(getattr(config, head), **sub)
    return dataclasses.replace(config, **top)


def check_declared(config) -> None:
    """ConfigError for the first leaf that is required but empty, not one of its
    choices, or not a number of its kind inside its declared range."""
    values = leaf_values(config)
    for leaf in leaves(type(config)):
        value = values[leaf.name]
        if leaf.required and not value:
            raise ConfigError(leaf.name, "required")
        if leaf.choices:
            for item in value if isinstance(value, tuple) else (value,):
                if item not in leaf.choices:
                    raise ConfigError(leaf.name, f"unknown value {item!r}; expected one of {list(leaf.choices)}")
        if not leaf.bounds.empty and value is not None:
            scalar = _base(leaf.type)[0]
            for item in value if isinstance(value, tuple) else (value,):
                checks.declared(leaf.name, item, leaf.bounds, scalar is int)


# --- absl flags -----------------------------------------------------------------


def expand_path(value):
    """A path as its user means it: `~` and `$VARIABLES` expanded (a shell leaves `--flag=~/x` alone)."""
    import os

    return os.path.expanduser(os.path.expandvars(value)) if value else value


def _path_parser(is_list: bool = False):
    """An absl parser of a path flag (or a comma-separated list of paths): values expanded."""
    from absl import flags

    base = flags.ListParser if is_list else flags.ArgumentParser

    class PathParser(base):
        def parse(self, argument):
            value = super().parse(argument)
            return [expand_path(v) for v in value] if is_list else expand_path(value)

        def flag_type(self):
            return "list of paths" if is_list else "path"

    return PathParser()


def DEFINE_path(name: str, default, help: str, flag_values=None) -> None:  # noqa: N802 - absl's naming
    """A string flag holding a file or directory: `~` and `$VARIABLES` expanded, as every path flag."""
    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE(_path_parser(), name, default, help, flag_values, flags.ArgumentSerializer())


def DEFINE_path_list(name: str, default, help: str, flag_values=None) -> None:  # noqa: N802
    """A comma-separated list of paths, each expanded as `DEFINE_path`'s."""
    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE(_path_parser(is_list=True), name, default, help, flag_values, flags.CsvListSerializer(","))


def keyword_arguments(callee, group, *, renamed=None, elsewhere=(), **given) -> dict:
    """The keyword arguments `callee` takes from the config `group`, so that no
    field is copied into a constructor's argument by hand.

    A field goes to the parameter of its own name, or of the name `renamed`
    maps it to; `given` adds arguments that are not fields (derived values,
    other groups' fields) and wins over a field. Every field must go somewhere:
    to `callee`, or to `elsewhere`: other callables whose parameters take it, or
    the names of fields `given` was derived from. Any other field is a
    TypeError, so a field added to a group cannot be forgotten silently.
    """
    import inspect

    renamed = dict(renamed or {})
    parameters = set(inspect.signature(callee).parameters)
    taken_elsewhere = set()
    for target in elsewhere:
        taken_elsewhere |= {target} if isinstance(target, str) else set(inspect.signature(target).parameters)
    arguments, forgotten = {}, []
    for field in dataclasses.fields(group):
        argument = renamed.get(field.name, field.name)
        if argument in parameters:
            arguments[argument] = getattr(group, field.name)
        elif field.name not in taken_elsewhere:
            forgotten.append(field.name)
    if forgotten:
        raise TypeError(f"{type(group).__name__} field(s) {forgotten} reach neither {callee.__qualname__} nor "
                        f"anything named in elsewhere")
    unknown = sorted(set(given) - parameters)
    if unknown:
        raise TypeError(f"{callee.__qualname__} takes no argument(s) {unknown}")
    return {**arguments, **given}


def define_flags(cls, flag_values=None, skip: tuple[str, ...] = ()) -> None:
    """Defines one absl flag per leaf of `cls` (name, type, default, help, choices)."""
    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    defaults = leaf_values(cls())
    for leaf in leaves(cls):
        if leaf.name in skip:
            continue
        scalar, is_tuple, _ = _base(leaf.type)
        default = defaults[leaf.name]
        text = leaf.help
        if leaf.required:
            text = f"{text.rstrip('.')}; required."
        if not leaf.bounds.empty:
            text = f"{text.rstrip('.')}; {'each ' if is_tuple else ''}{leaf.bounds.describe()}."
        if leaf.choices and (is_tuple or scalar is not str):
            text += f" One or more of: {', '.join(map(str, leaf.choices))}."
        kwargs = dict(flag_values=flag_values)
        if is_tuple and leaf.repeated:
            flags.DEFINE_multi_string(leaf.name, [str(v) for v in default], text, **kwargs)
        elif is_tuple:
            flags.DEFINE_list(leaf.name, [str(v) for v in default], text, **kwargs)
        elif scalar is bool:
            flags.DEFINE_bool(leaf.name, default, text, **kwargs)
        elif scalar is int:
            flags.DEFINE_integer(leaf.name, default, text, **kwargs)
        elif scalar is float:
            flags.DEFINE_float(leaf.name, default, text, **kwargs)
        elif leaf.choices:
            flags.DEFINE_enum(leaf.name, default, list(leaf.choices), text, **kwargs)
        elif leaf.is_path:
            DEFINE_path(leaf.name, default, text, flag_values)
        else:
            flags.DEFINE_string(leaf.name, default, text, **kwargs)


def from_flags(cls, flag_values=None):
    """The config `cls` holding the parsed flags' values."""
    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    config = cls()
    changes = {}
    for leaf in leaves(cls):
        if leaf.name in flag_values:
            value = flag_values[leaf.name].value
            changes[leaf.name] = _coerce(leaf, value) if value is not None else None
    return replace(config, **changes)


def flag_message(error: ConfigError, flag_names) -> str:
    """A ConfigError as a command-line tool reports it: fields as their flags.

    The error's field becomes `--field`, and so does every other field the
    message names in backticks (`resume` -> --resume), where it is a flag.
    """
    def as_flag(match):
        name = match.group(1)
        return f"--{name}" if name in flag_names else match.group(0)

    message = re.sub(r"`([a-z][a-z0-9_]*)`", as_flag, error.message)
    if error.field and error.field in flag_names:
        return f"--{error.field}: {message}"
    return f"{error.field}: {message}" if error.field else message
