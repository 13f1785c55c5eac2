"""`--config FILE` for every command: a file whose keys are the command's long option names.

TOML (`.toml`), JSON (`.json`) or YAML (anything else); keys with dashes or underscores; with
`section`, a table of that name holds them when present (`[scaler]`). Each value must have its
option's shape (click would turn an int path into a file descriptor and a mapping into its
keys); the values then become the options' defaults, so flags win and click validates values
exactly as it does flags. Every problem is a `ConfigError` of one line naming the file, the key
and the fix: each command reports it in its own one-line style.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click  # not imported at run time here: the agent's argparse path must not load it


class ConfigError(ValueError):
    pass


def _parse(path: str, kind: str | None) -> Any:
    kind = kind or ("TOML" if path.endswith(".toml") else "JSON" if path.endswith(".json")
                    else "YAML")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}; give a readable {kind} file") from None
    try:
        if kind == "TOML":  # parsers imported when used: the agent's memory is the product's
            import tomllib

            return tomllib.loads(raw.decode())
        if kind == "JSON":
            return json.loads(raw)
        import yaml

        return yaml.safe_load(raw)
    except Exception as e:  # noqa: BLE001 - any parse error is the file's fault
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        what = "not TOML" if kind == "TOML" else "not valid YAML/JSON"
        raise ConfigError(f"{path}: {what} ({first}); fix the syntax") from None


@dataclass(frozen=True)
class ConfigKey:
    """One option as a config file may name it: its parameter name, its long option names
    (without dashes), and the shape its value must have: "multiple" (a value or a list),
    "path" (a string), "bool", or "scalar"."""

    name: str
    options: tuple[str, ...]
    shape: str


def option_defaults(command: click.Command, path: str, section: str | None = None,
                    path_types: tuple[type, ...] | None = None,
                    kind: str | None = None) -> dict[str, Any]:
    """The file's values as {parameter name: value} for `ctx.default_map`. `path_types`: option
    types whose value is a file path (must be a string; default click.Path); `kind`: TOML,
    JSON or YAML whatever the file's extension (default: by extension)."""
    import click

    path_types = path_types or (click.Path,)
    keys = []
    for p in command.params:
        if not p.name or p.name == "config":
            continue
        shape = ("multiple" if getattr(p, "multiple", False) else
                 "path" if isinstance(p.type, path_types) else
                 "bool" if isinstance(p.type, click.types.BoolParamType) else "scalar")
        keys.append(ConfigKey(p.name, tuple(o.lstrip("-") for o in p.opts
                                            if o.startswith("--")), shape))
    return {name: v for name, (_, v) in file_values(path, keys, section, kind).items()}


def file_values(path: str, keys: list[ConfigKey], section: str | None = None,
                kind: str | None = None) -> dict[str, tuple[str, Any]]:
    """The file's values as {parameter name: (the key as the file spells it, value)}, each
    checked for its key's shape (not converted: the caller converts them as it converts
    flags)."""
    doc = _parse(path, kind)
    if section is not None and isinstance(doc, dict) and section in doc:
        doc = doc[section]
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: [{section}] must be a mapping (table) of option names "
                              "to values")
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    known: dict[str, ConfigKey] = {}
    for k in keys:
        for spelling in (k.name, *k.options):
            known[spelling.replace("_", "-")] = k
    out: dict[str, tuple[str, Any]] = {}
    for key, v in doc.items():
        k = known.get(str(key).replace("_", "-"))
        if k is None:
            names = sorted({(k.options[0] if k.options else k.name) for k in keys})
            import difflib  # only on this error path (the agent imports this module)

            near = difflib.get_close_matches(str(key).replace("_", "-"), names, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"valid keys: {', '.join(names)}"
            raise ConfigError(f"{path}: unknown key '{key}'; {hint}")
        out[k.name] = (str(key), _shaped(path, str(key), v, k.shape))
    return out


def _shaped(path: str, key: str, v: Any, shape: str) -> Any:
    scalar = (str, int, float, bool)
    if shape == "multiple":
        v = [v] if isinstance(v, scalar) else v
        if isinstance(v, list) and all(isinstance(x, scalar) for x in v):
            return v
        want = "a value or a list of values"
    elif shape == "path":
        if isinstance(v, str):
            return v
        want = "a string (a file path)"
    elif shape == "bool":
        if isinstance(v, bool):
            return v
        want = "true or false"
    elif isinstance(v, scalar):
        return v
    else:
        want = "a single value, not a mapping or list"
    raise ConfigError(f"{path}: key '{key}' must be {want}")
