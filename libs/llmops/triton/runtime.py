"""Run a real Triton Inference Server on the CPU, without Docker, from the nvidia-pytriton wheel.

The wheel ships a complete `tritonserver` build (binary, python backend, python
backend stubs, bundled shared libraries). It is unpacked, never installed: it
pins numpy<2, which the platform's own venv does not want. The wheel's relative
layout is kept because its binaries find their libraries through RPATHs such
as `$ORIGIN/../../../nvidia_pytriton.libs`.

Used by `llmops up` and by the tests.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
import zipfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path

PYTRITON_VERSION = "0.7.0"
# The stub embeds libpython; the models' venv is built with the platform's Python.
STUB_PYTHON = "3.11"
# How long Triton waits for in-flight requests after SIGTERM (its default is 30 s);
# a supervisor should allow this much (plus a few seconds) before it sends SIGKILL.
EXIT_TIMEOUT_S = 10

# The causal_lm model serves the Hugging Face model directory named by this variable.
LLM_PATH_ENV = "LLMOPS_LLM_PATH"
DEFAULT_LLM = "tiny-llm"  # under the models dir: built by `python -m inference.build_tiny_llm`

_SERVER = "pytriton/tritonserver"
_LIBS = "nvidia_pytriton.libs"
_STUB = "triton_python_backend_stub"
_STUB_MEMBER = f"{_SERVER}/python_backend_stubs/{STUB_PYTHON}/{_STUB}"
_KEEP = (f"{_SERVER}/bin/", f"{_SERVER}/backends/", f"{_LIBS}/", _STUB_MEMBER)
_SKIP = f"{_LIBS}/libpython"  # 32 MB, needed only by the wheel's Python 3.13 stub
_MARKER = ".installed"
_MARKER_TEXT = f"nvidia-pytriton=={PYTRITON_VERSION} python-stub=={STUB_PYTHON}\n"


@dataclass(frozen=True)
class TritonRuntime:
    """An unpacked tritonserver and how to start it on 127.0.0.1."""

    binary: Path
    backends_dir: Path
    lib_dir: Path

    @classmethod
    def at(cls, root: Path) -> TritonRuntime:
        root = root.resolve()
        server = root / _SERVER
        return cls(server / "bin" / "tritonserver", server / "backends", root / _LIBS)

    def command(
        self, model_repository: Path, grpc_port: int, http_port: int, metrics_port: int
    ) -> list[str]:
        """The tritonserver command line.

        Explicit model control with `--load-model=*` loads every model in the
        repository at start-up (an empty repository starts fine) and still
        accepts load/unload requests later. A model that fails to load stops
        the server ("failed to load all models"), so a model must load even
        when it has nothing to serve (causal_lm without LLMOPS_LLM_PATH loads
        and refuses requests, saying why). The GPU flags keep a CPU-only
        machine's log quiet and its start-up fast.
        """
        return [
            str(self.binary),
            f"--model-repository={model_repository.resolve()}",
            f"--backend-directory={self.backends_dir}",
            "--model-control-mode=explicit",
            "--load-model=*",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc_port}",
            "--http-address=127.0.0.1",
            f"--http-port={http_port}",
            "--allow-metrics=true",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            "--log-verbose=0",
        ]

    def env(self) -> dict[str, str]:
        """The environment for tritonserver: os.environ plus library paths and LLMOPS_LLM_PATH.

        The python backend stub links `libpython3.11.so.1.0`; this interpreter's
        copy is added so the stub also runs where Python is not a system package
        (pyenv, uv), and uses the same build as the venv the models run in.

        LLMOPS_LLM_PATH (the model directory the `causal_lm` model serves), when
        not in the environment, defaults to the tiny test model `make setup`
        builds, `<LLMOPS_MODELS_DIR or models>/tiny-llm`, as an absolute path,
        if it is there; set empty, causal_lm serves no model.
        """
        paths = [str(self.lib_dir)]
        libdir = sysconfig.get_config_var("LIBDIR")
        if libdir and (Path(libdir) / f"libpython{STUB_PYTHON}.so.1.0").exists():
            paths.append(libdir)
        inherited = os.environ.get("LD_LIBRARY_PATH")
        if inherited:
            paths.append(inherited)
        env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(paths)}
        if LLM_PATH_ENV not in env:
            default = default_llm_path()
            if default is not None:
                env[LLM_PATH_ENV] = str(default)
        return env


def default_llm_path() -> Path | None:
    """`<LLMOPS_MODELS_DIR or ./models>/tiny-llm`, resolved, if it is a model directory."""
    path = (Path(os.environ.get("LLMOPS_MODELS_DIR") or "models") / DEFAULT_LLM).resolve()
    return path if (path / "config.json").exists() else None


def install_runtime(dest: Path, wheel: Path | None = None) -> TritonRuntime:
    """Unpack tritonserver from the nvidia-pytriton wheel into `dest`, once.

    Downloads the wheel with pip unless `wheel` is given. Extracts into a
    sibling temporary folder and renames it into place, so an interrupted or
    concurrent install never leaves a half-unpacked runtime behind a marker.
    """
    dest = dest.resolve()
    if _installed(dest):
        return TritonRuntime.at(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        work = Path(tmp)
        if wheel is None:
            wheel = _download_wheel(work)
        print(f"triton: unpacking {wheel.name}", flush=True)
        staged = work / "runtime"
        _unpack(wheel, staged)
        (staged / _MARKER).write_text(_MARKER_TEXT)
        if dest.exists() and not _installed(dest):
            shutil.rmtree(dest)  # an unfinished install, or another version
        try:
            staged.rename(dest)
        except OSError:
            if not _installed(dest):
                raise
            # another process installed it first; use theirs
    print(f"triton: runtime ready in {dest}", flush=True)
    return TritonRuntime.at(dest)


def _installed(dest: Path) -> bool:
    marker = dest / _MARKER
    return marker.exists() and marker.read_text() == _MARKER_TEXT


def _download_wheel(into: Path) -> Path:
    print(f"triton: downloading nvidia-pytriton=={PYTRITON_VERSION} (about 55 MB)", flush=True)
    requirement = f"nvidia-pytriton=={PYTRITON_VERSION}"
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    subprocess.run([*pip, requirement, "-d", str(into)], check=True)
    found = sorted(into.glob(f"nvidia_pytriton-{PYTRITON_VERSION}-*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download left no nvidia-pytriton wheel in {into}")
    return found[0]


def _unpack(wheel: Path, root: Path) -> None:
    """Extract only the server, its backends, its libraries and the 3.11 stub."""
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(_KEEP) and not m.startswith(_SKIP)]
        if _STUB_MEMBER not in members:
            raise FileNotFoundError(f"{wheel.name} has no {_STUB_MEMBER}")
        archive.extractall(root, members)
    runtime = TritonRuntime.at(root)
    # The python backend looks for its stub beside libtriton_python.so.
    stub = runtime.backends_dir / "python" / _STUB
    shutil.move(root / _STUB_MEMBER, stub)
    shutil.rmtree(root / _SERVER / "python_backend_stubs")
    for executable in (runtime.binary, stub):
        executable.chmod(0o755)  # zipfile drops permission bits


class TritonStartError(RuntimeError):
    """tritonserver exited, or did not become ready in time."""


async def wait_ready(
    http_url: str,
    timeout_s: float,
    process: subprocess.Popen[bytes] | asyncio.subprocess.Process | None = None,
    log_file: Path | None = None,
) -> None:
    """Poll `{http_url}/v2/health/ready` until it answers 200.

    Ready means every model loaded at start-up is ready (Triton's strict
    readiness). Fails fast if `process` exits, and puts the last lines of
    `log_file` (where its output goes) in the error.
    """
    url = f"{http_url.rstrip('/')}/v2/health/ready"
    deadline = time.monotonic() + timeout_s
    while True:
        code = _exit_code(process)
        if code is not None:
            raise TritonStartError(f"tritonserver exited with code {code}{_tail(log_file)}")
        if await asyncio.to_thread(_is_ready, url):
            return
        if time.monotonic() >= deadline:
            raise TritonStartError(
                f"tritonserver not ready at {url} after {timeout_s:g}s{_tail(log_file)}"
            )
        await asyncio.sleep(0.1)


def _exit_code(process: subprocess.Popen[bytes] | asyncio.subprocess.Process | None) -> int | None:
    if isinstance(process, subprocess.Popen):
        return process.poll()
    return None if process is None else process.returncode


# Triton is on 127.0.0.1: never route the health check through an HTTP(S)_PROXY.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _is_ready(url: str) -> bool:
    try:
        with _DIRECT.open(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):  # refused while starting, 400 while loading
        return False


def _tail(log_file: Path | None, lines: int = 20) -> str:
    if log_file is None or not log_file.exists():
        return ""
    with log_file.open(errors="replace") as handle:
        last = "".join(deque(handle, maxlen=lines))
    return f"; last lines of {log_file}:\n{last}"
