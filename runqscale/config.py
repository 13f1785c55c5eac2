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
from typing import Any

import click


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


def option_defaults(command: click.Command, path: str, section: str | None = None,
                    path_types: tuple[type, ...] = (click.Path,),
                    kind: str | None = None) -> dict[str, Any]:
    """The file's values as {parameter name: value} for `ctx.default_map`. `path_types`: option
    types whose value is a file path (must be a string); `kind`: TOML, JSON or YAML whatever the
    file's extension (default: by extension)."""
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
    params = [p for p in command.params if p.name and p.name != "config"]
    known: dict[str, click.Parameter] = {}
    for p in params:
        for key in (p.name or "", *(o.lstrip("-") for o in p.opts if o.startswith("--"))):
            known[key.replace("_", "-")] = p
    out: dict[str, Any] = {}
    for key, v in doc.items():
        p = known.get(str(key).replace("_", "-"))
        if p is None:
            names = sorted({(o.lstrip("-") if o.startswith("--") else o)
                            for q in params for o in q.opts[:1]})
            import difflib  # only on this error path (the agent imports this module)

            near = difflib.get_close_matches(str(key).replace("_", "-"), names, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"valid keys: {', '.join(names)}"
            raise ConfigError(f"{path}: unknown key '{key}'; {hint}")
        out[p.name or ""] = _shaped(path, str(key), v, p, path_types)
    return out


def _shaped(path: str, key: str, v: Any, p: click.Parameter,
            path_types: tuple[type, ...]) -> Any:
    scalar = (str, int, float, bool)
    if getattr(p, "multiple", False):
        v = [v] if isinstance(v, scalar) else v
        if isinstance(v, list) and all(isinstance(x, scalar) for x in v):
            return v
        want = "a value or a list of values"
    elif isinstance(p.type, path_types):
        if isinstance(v, str):
            return v
        want = "a string (a file path)"
    elif isinstance(p.type, click.types.BoolParamType):
        if isinstance(v, bool):
            return v
        want = "true or false"
    elif isinstance(v, scalar):
        return v
    else:
        want = "a single value, not a mapping or list"
    raise ConfigError(f"{path}: key '{key}' must be {want}")
