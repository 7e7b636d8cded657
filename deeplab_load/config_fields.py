"""Typed, nested configs whose leaves are flags (in the style of official/vision's dataclasses).

A config is a frozen dataclass; a field is either a leaf made by `option` (a default, its flag
help text, and optionally enum choices, a valid range, a list parser, a flag name) or a group made
by `group` (a nested config dataclass). Every leaf has a flag name, unique within its config: the
``flag=`` given to `option`, else the group's prefix + the field name. Commands define their flags
from a config class (``cli.define_flags``) and build the config from them, so a default and its
help are written once, beside the field.

    @dataclasses.dataclass(frozen=True)
    class Stage1Config:
        batch_size: int = option(7, "Stage-1 global batch.", valid=(lambda v: v >= 1, ">= 1"))

    @dataclasses.dataclass(frozen=True)
    class TrainConfig:
        stage1: Stage1Config = group(Stage1Config, prefix="stage1_")   # --stage1_batch_size

    flag_values(TrainConfig())                      # {"stage1_batch_size": 7}
    with_flags(TrainConfig(), stage1_batch_size=8)  # TrainConfig(stage1=Stage1Config(8))
"""
import dataclasses

from deeplab_load.errors import FlagError


def option(default, help, choices=None, *,  # pylint: disable=redefined-builtin
           flag=None, valid=None, parse=None, lower_bound=None):
    """A leaf field.

    help: the flag's help text. choices: the values of an enum flag. flag: the flag name (default:
    the group's prefix + the field name). valid: (test of the value, the valid range as an error
    states it), checked by `problems`. parse: for tuple fields, (flag name, list of strings) ->
    value (default `ints`). lower_bound: the integer flag's lower bound (absl checks it).
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "flag": flag, "valid": valid, "parse": parse,
        "lower_bound": lower_bound})


def group(cls, prefix=""):
    """A nested config field of type ``cls`` (its defaults); ``prefix`` starts its flag names."""
    return dataclasses.field(default_factory=cls, metadata={"group": cls, "prefix": prefix})


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One flag of a config: its name, the path of field names to it, and the field."""
    flag: str
    path: tuple
    field: dataclasses.Field

    @property
    def default(self):
        return self.field.default

    @property
    def help(self):
        return self.field.metadata.get("help", "")

    @property
    def choices(self):
        return self.field.metadata.get("choices")

    @property
    def valid(self):
        return self.field.metadata.get("valid")

    @property
    def is_list(self):
        return "tuple" in str(self.field.type)

    def parse_list(self, values):
        """The field's value of a list flag's strings (None stays None)."""
        if values is None:
            return None
        return (self.field.metadata.get("parse") or ints)(self.flag, values)

    def get(self, config):
        for name in self.path:
            config = getattr(config, name)
        return config


def leaves(cls, prefix="", path=()):
    """[Leaf] of config class ``cls`` in field order, groups expanded in place."""
    found = []
    for field in dataclasses.fields(cls):
        if "group" in field.metadata:
            found += leaves(field.metadata["group"], prefix + field.metadata["prefix"],
                            path + (field.name,))
        else:
            found.append(Leaf(field.metadata.get("flag") or prefix + field.name,
                              path + (field.name,), field))
    names = [leaf.flag for leaf in found]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates and not path:
        raise TypeError(f"{cls.__name__}: flag names used twice: {duplicates}")
    return found


def flag_values(config):
    """{flag name: value} of a config instance."""
    return {leaf.flag: leaf.get(config) for leaf in leaves(type(config))}


def with_flags(config, **values):
    """A copy of ``config`` with the fields of the flags named in ``values`` replaced."""
    by_flag = {leaf.flag: leaf for leaf in leaves(type(config))}
    unknown = sorted(set(values) - set(by_flag))
    if unknown:
        raise TypeError(f"{type(config).__name__} has no flag(s) {unknown}")
    nested = {}
    for name, value in values.items():
        node = nested
        *groups, last = by_flag[name].path
        for part in groups:
            node = node.setdefault(part, {})
        node[last] = value
    return _replace(config, nested)


def _replace(config, nested):
    changes = {name: (_replace(getattr(config, name), value) if isinstance(value, dict)
                      else value) for name, value in nested.items()}
    return dataclasses.replace(config, **changes)


def from_flags(cls, **values):
    """``cls`` with its defaults, the flags named in ``values`` replaced."""
    return with_flags(cls(), **values)


def problems(config):
    """['--name=value must be ...'] of the leaves outside their valid range or choices."""
    found = []
    for leaf in leaves(type(config)):
        value = leaf.get(config)
        if leaf.valid and not leaf.valid[0](value):
            found.append(f"--{leaf.flag}={shown(value)} must be {leaf.valid[1]}")
    for leaf in leaves(type(config)):
        value = leaf.get(config)
        if leaf.choices and value is not None and value not in leaf.choices:
            found.append(f"--{leaf.flag}={value} must be one of {', '.join(leaf.choices)}")
    return found


def to_flagfile(config):
    """``--name=value`` lines that give ``config`` to its command (None: the flag is left out)."""
    lines = []
    for name, value in flag_values(config).items():
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"--{'' if value else 'no'}{name}")
        elif isinstance(value, tuple):
            lines.append(f"--{name}={','.join(map(str, value)) or 'none'}")
        else:
            lines.append(f"--{name}={value}")
    return "\n".join(lines) + "\n"


def shown(value):
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


# Parsers of list flags: (flag name, list of strings) -> tuple.

def ints(name, values):
    """Integers as a tuple; () for 'none' (or an empty list)."""
    if [v.strip().lower() for v in values] in ([], ["none"], [""]):
        return ()
    try:
        return tuple(int(v) for v in values if v.strip())
    except ValueError as err:
        raise FlagError(f"--{name} must be integers or none, got {','.join(values)}") from err


def size(name, values):
    """(H, W) of 'H,W' or 'S' (square); () for 'none'. Ranges are checked by the config."""
    value = ints(name, values)
    return value * 2 if len(value) == 1 else value
