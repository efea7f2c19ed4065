"""Read the Dockerfile into stages, and run the Tiltfile with builtins that record their calls.

Docker and Tilt cannot run here. The Dockerfile reader handles what
deploy/docker/Dockerfile uses (global ARGs, `FROM ... AS`, line continuations,
flags such as `--from` and `--mount`, JSON and shell forms). The Tiltfile runs
in a real Starlark interpreter (starlark-pyo3, the Rust implementation), so a
syntax error, an unknown builtin or a wrong call shape fails the test as it
would fail `tilt up`.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any


# -- Dockerfile ----------------------------------------------------------------
@dataclass
class Instruction:
    cmd: str  # upper case: RUN, COPY, ...
    flags: dict[str, str]  # --from=proto -> {"from": "proto"}; repeated flags keep the last
    args: str  # the rest of the line, continuations joined

    def words(self) -> list[str]:
        """Arguments of the JSON form, or the shell words of the plain form."""
        text = self.args.strip()
        if text.startswith("["):
            words: list[str] = json.loads(text)
            return words
        return shlex.split(text)


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]


@dataclass
class Dockerfile:
    stages: dict[str, Stage]

    @classmethod
    def parse(cls, text: str) -> Dockerfile:
        global_args: dict[str, str] = {}
        stages: dict[str, Stage] = {}
        current: Stage | None = None
        for line in _logical_lines(text):
            cmd, _, rest = line.partition(" ")
            cmd = cmd.upper()
            flags, rest = _flags(rest)
            if cmd == "FROM":
                words = rest.split()
                base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m[1], m[0]), words[0])
                name = (
                    words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
                )
                current = stages[name] = Stage(name, base)
            elif current is None:
                if cmd != "ARG":
                    raise ValueError(f"{cmd} before the first FROM")
                key, _, value = rest.partition("=")
                global_args[key.strip()] = value.strip()
            else:
                current.instructions.append(Instruction(cmd, flags, rest))
        return cls(stages)

    def deps(self, name: str) -> set[str]:
        """Stages that `name` is built on or copies from (transitively), itself included."""
        found: set[str] = set()
        todo = [name]
        while todo:
            stage = self.stages[todo.pop()]
            if stage.name in found:
                continue
            found.add(stage.name)
            if stage.base in self.stages:
                todo.append(stage.base)
            todo += [
                i.flags["from"] for i in stage.all("COPY") if i.flags.get("from") in self.stages
            ]
        return found

    def chain(self, name: str) -> list[Stage]:
        """`name` and the stages it is built FROM, nearest first (what ends up in the image)."""
        out = [self.stages[name]]
        while out[-1].base in self.stages:
            out.append(self.stages[out[-1].base])
        return out

    def targets(self) -> set[str]:
        """Stages no other stage builds on or copies from: the images this file is for."""
        used = {s.base for s in self.stages.values()}
        used |= {i.flags.get("from", "") for s in self.stages.values() for i in s.all("COPY")}
        return {name for name in self.stages if name not in used}

    def workdir(self, name: str) -> str:
        for stage in self.chain(name):
            dirs = stage.all("WORKDIR")
            if dirs:
                return dirs[-1].args.strip()
        return "/"

    def env(self, name: str) -> dict[str, str]:
        """ENV of the image (nearest stage wins)."""
        env: dict[str, str] = {}
        for stage in reversed(self.chain(name)):
            for inst in stage.all("ENV"):
                for word in shlex.split(inst.args):
                    key, _, value = word.partition("=")
                    env[key] = value
        return env

    def copies(self, name: str) -> list[tuple[list[str], str, str | None]]:
        """(sources, absolute destination, --from stage) of every COPY in the image's chain."""
        out = []
        for stage in self.chain(name):
            workdir = self.workdir(stage.base) if stage.base in self.stages else "/"
            for inst in stage.instructions:
                if inst.cmd == "WORKDIR":
                    workdir = str(PurePosixPath(workdir, inst.args.strip()))
                elif inst.cmd == "COPY":
                    *sources, dest = inst.words()
                    out.append((sources, str(PurePosixPath(workdir, dest)), inst.flags.get("from")))
        return out


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append((pending + stripped).strip())
        pending = ""
    if pending:
        lines.append(pending.strip())
    return lines


def _flags(rest: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    rest = rest.strip()
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        key, _, value = word[2:].partition("=")
        flags[key] = value
        rest = rest.strip()
    return flags, rest


# -- Tiltfile ------------------------------------------------------------------
@dataclass
class Call:
    name: str
    args: list[Any]
    kwargs: dict[str, Any]

    def arg(self, position: int, keyword: str) -> Any:
        """An argument given either by position or by keyword."""
        if len(self.args) > position:
            return self.args[position]
        return self.kwargs.get(keyword)


TILT_BUILTINS = (
    "version_settings",
    "k8s_yaml",
    "kustomize",
    "docker_build",
    "k8s_resource",
    "sync",
    "run",
    "fall_back_on",
)
EXTENSIONS = {"ext://restart_process": ("docker_build_with_restart", "custom_build_with_restart")}


def run_tiltfile(path: Path) -> list[Call]:
    """Execute the Tiltfile; returns every builtin call in order.

    Builtins that return a value to the Tiltfile (kustomize, sync, run) return a
    dict naming the call, so the recorded arguments of later calls show it.
    """
    import starlark as sl

    calls: list[Call] = []

    def recorder(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(Call(name, list(args), kwargs))
            return {"call": name, "args": list(args), **kwargs}

        return call

    def load(module_id: str) -> Any:
        if module_id not in EXTENSIONS:
            raise ValueError(f"unknown Tilt extension {module_id}")
        ext = sl.Module()
        for name in EXTENSIONS[module_id]:
            ext.add_callable(name, recorder(name))
        return ext.freeze()

    module = sl.Module()
    for name in TILT_BUILTINS:
        module.add_callable(name, recorder(name))
    ast = sl.parse(path.name, path.read_text(), sl.Dialect.extended())
    sl.eval(module, ast, sl.Globals.standard(), sl.FileLoader(load))
    return calls
