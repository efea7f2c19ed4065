"""Print requirement lines from pyproject.toml, so images install what `pip install .[extra]` would.

`python requirements.py [--no-base] [--pick NAME]... [EXTRA ...]`

The Dockerfile installs dependencies before it copies the code (a code change
must not reinstall them), and the services run from `libs/` and `services/`
on PYTHONPATH rather than as an installed package; so it needs the dependency
lists alone. pyproject.toml stays the single place where versions are pinned.
Self-references such as `llmops[a,b]` are expanded; `--pick` keeps only the
named packages (e.g. the protoc plugins from the `dev` extra).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name(req: str) -> str:
    match = NAME.match(req)
    if not match:
        raise SystemExit(f"cannot read requirement {req!r}")
    return match[1]


def requirements(pyproject: dict, extras: list[str], base: bool) -> list[str]:
    project = pyproject["project"]
    own = canonical(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    found: list[str] = list(project["dependencies"]) if base else []
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}")
        for req in optional[extra]:
            match = NAME.match(req)
            if match and canonical(match[1]) == own:
                todo.extend(e.strip() for e in (match[2] or "[]")[1:-1].split(",") if e.strip())
            else:
                found.append(req)
    return list(dict.fromkeys(found))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extras", nargs="*")
    parser.add_argument("--no-base", action="store_true", help="leave out [project].dependencies")
    parser.add_argument("--pick", action="append", default=[], help="keep only this package")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args(argv)
    reqs = requirements(tomllib.loads(args.pyproject.read_text()), args.extras, not args.no_base)
    if args.pick:
        wanted = {canonical(p) for p in args.pick}
        reqs = [r for r in reqs if canonical(_name(r)) in wanted]
        missing = wanted - {canonical(_name(r)) for r in reqs}
        if missing:
            raise SystemExit(f"not found in those extras: {', '.join(sorted(missing))}")
    sys.stdout.write("".join(f"{r}\n" for r in reqs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
