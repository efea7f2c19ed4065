"""The python models' own environment: a venv that a model config's EXECUTION_ENV_PATH names.

Triton's python backend accepts a conda-pack tarball or an unpacked directory
there; given a directory it uses it in place: it runs `source <env>/bin/activate`
and then starts the stub, whose embedded Python finds the venv's `python3` on
PATH and so its site-packages. A plain venv is enough, built with the
platform's Python, which must be the stub's (3.11).

The platform's own venv cannot serve: with numpy 2 the stub returns empty
output tensors without any error, so the models' venv pins numpy 1.x and holds
nothing else the models do not need.

Each model folder may declare its own requirements in a `requirements.txt`
beside its `config.pbtxt` (one pip requirement a line, `#` comments); without
one the venv gets `numpy==1.26.4` only. The venv is built in the folder's
`python_env/`.

A venv is not relocatable (its `bin/activate` names its absolute path), so it
is built where it is used; a marker written last makes the build idempotent
and a change of requirements rebuilds it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from llmops.triton.runtime import STUB_PYTHON

MODEL_ENV_REQUIREMENTS = ("numpy==1.26.4",)
REQUIREMENTS_FILE = "requirements.txt"
_MARKER = ".installed"


def model_requirements(model_dir: Path) -> tuple[str, ...]:
    """The requirements a model folder declares in requirements.txt, else the default."""
    path = model_dir / REQUIREMENTS_FILE
    if not path.exists():
        return MODEL_ENV_REQUIREMENTS
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    requirements = tuple(line for line in lines if line)
    if not requirements:
        raise ValueError(f"{path} lists no requirements")
    return requirements


def install_model_env(dest: Path, requirements: Sequence[str] | None = None) -> Path:
    """Build a venv with `requirements` at `dest` unless one with exactly these is there.

    `requirements` unset: those of the model folder that holds `dest`
    (`<model>/python_env` → `<model>/requirements.txt`, else numpy==1.26.4).
    Returns the resolved path: the python backend resolves EXECUTION_ENV_PATH
    with realpath before it sources `bin/activate`, so the venv is built at
    the canonical path.
    """
    dest = dest.resolve()
    if requirements is None:
        requirements = model_requirements(dest.parent)
    marker_text = f"python=={STUB_PYTHON} {' '.join(requirements)}\n"
    marker = dest / _MARKER
    if marker.exists() and marker.read_text() == marker_text:
        return dest
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if running != STUB_PYTHON:
        raise RuntimeError(
            f"the models' venv needs Python {STUB_PYTHON} (the stub's), not {running}"
        )
    if dest.exists():
        shutil.rmtree(dest)  # unfinished, or built for other requirements
    print(f"triton: building the models' venv in {dest}: {', '.join(requirements)}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(dest / "bin" / "python"), "install"]
    flags = ["--quiet", "--disable-pip-version-check", "--only-binary=:all:"]
    subprocess.run([*pip, *flags, *requirements], check=True)
    marker.write_text(marker_text)
    return dest
