"""A/B a showar change against an earlier revision in one paired run: showar's modules as they
were at a git revision, registered as the policy `showar@REV` next to today's `showar`.

    python -m runqscale.validation.policy_at_rev HEAD~1 validate --app deathstarbench \\
        --policies showar,showar@HEAD~1 --baselines showar@HEAD~1 --repeats 3 ...

Everything else (load, capacity, actuator, the other policies) is today's code, so the paired
ratios measure the policy change alone. Needs a git checkout of runqscale (a user's clone).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from runqscale import revtree
from runqscale.scaler import policies

# showar.py and the sibling modules it imports; those are taken from the same revision
MODULES = ("showar", "showar_sizing", "showar_startup", "attribution")
SOURCE_DIR = "scaler/policies"


class RevisionError(RuntimeError):
    pass


def _git_show(root: Path, rev: str, path: str) -> str | None:
    out = subprocess.run(["git", "-C", str(root), "show", f"{rev}:{path}"],
                         capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def repo_root() -> Path:
    """The git checkout this package was installed from (editable installs)."""
    root = revtree.git_toplevel()
    if root is None:
        raise RevisionError(f"runqscale at {Path(policies.__file__).resolve().parent} is not in "
                            "a git checkout; install it editable from a clone to compare "
                            "revisions")
    return Path(root)


def register(rev: str, root: Path | None = None) -> str:
    """Load showar as of `rev` and add it to the policy table as `showar@REV`; its name."""
    root = root or repo_root()
    name = f"showar@{rev}"
    pkg = Path(tempfile.mkdtemp(prefix="showar-at-")) / "showar_at_rev"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for mod in MODULES:
        text = _git_show(root, rev, f"{SOURCE_DIR}/{mod}.py")
        if text is None:
            if mod == "showar":
                raise RevisionError(f"revision {rev!r}: no {SOURCE_DIR}/showar.py there "
                                    "(check the revision with `git log`)")
            continue  # a sibling that did not exist yet
        for sibling in MODULES:  # that revision's siblings, not today's
            text = text.replace(f"from runqscale.scaler.policies import {sibling}",
                                f"from . import {sibling}")
        (pkg / f"{mod}.py").write_text(text)
    spec = importlib.util.spec_from_file_location("showar_at_rev", pkg / "__init__.py",
                                                  submodule_search_locations=[str(pkg)])
    assert spec and spec.loader
    package = importlib.util.module_from_spec(spec)
    sys.modules["showar_at_rev"] = package
    spec.loader.exec_module(package)
    module = importlib.import_module("showar_at_rev.showar")
    # the next register() loads another revision under the same package name
    for key in [k for k in sys.modules if k == "showar_at_rev" or k.startswith("showar_at_rev.")]:
        del sys.modules[key]
    policies.POLICIES[name] = policies.Policy(name, module.decide, module.PERIOD_SECONDS,
                                              f"showar as of {rev}")
    return name


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return
    try:
        name = register(args[0])
    except RevisionError as e:
        sys.exit(f"error: {e}")
    print(f"registered {name}", file=sys.stderr)
    from runqscale.cli import run

    sys.argv = ["runqscale", *args[1:]]
    run()


if __name__ == "__main__":
    main()
