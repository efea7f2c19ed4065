"""The LiteLLM proxy for bench/chat.py: its own venv (never .venv), a config, one worker.

LiteLLM is only a point of comparison, so it is installed on first use into
.cache/bench/litellm-venv (gitignored), pinned, and never into the project's
venv. `python bench/litellm_proxy.py` just builds the venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "bench" / "litellm-venv"
# 1.107.0 was a compromised release (withdrawn from PyPI). The newest release whose
# `proxy` extra resolves from PyPI here (1.108+ need litellm-proxy* builds not published).
LITELLM_VERSION = "1.106.12"
REQUIREMENT = f"litellm[proxy]=={LITELLM_VERSION}"
STAMP = VENV / f".installed-{LITELLM_VERSION}"
MASTER_KEY = "sk-bench-master-key"


def ensure_venv() -> Path:
    """The venv's `litellm` executable, building the venv first if needed (progress shown)."""
    exe = VENV / "bin" / "litellm"
    if STAMP.exists() and exe.exists():
        return exe
    print(f"installing {REQUIREMENT} into {VENV.relative_to(ROOT)} (first run only)...", flush=True)
    started = time.monotonic()
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip"]
    subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "--progress-bar", "on", REQUIREMENT], check=True)
    STAMP.touch()
    print(f"  done in {time.monotonic() - started:.0f}s", flush=True)
    return exe


def write_config(path: Path, upstream_base_url: str, model: str = "mock") -> Path:
    """Route `model` to the OpenAI-compatible upstream; no DB, no callbacks, no telemetry."""
    path.write_text(
        f"""model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {upstream_base_url}
      api_key: sk-upstream-unused
litellm_settings:
  telemetry: false
  drop_params: true
  set_verbose: false
  json_logs: false
  cache: false
  callbacks: []
  success_callback: []
  failure_callback: []
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  disable_spend_logs: true
  disable_error_logs: true
  disable_adding_master_key_hash_to_db: true
  allow_requests_on_db_unavailable: true
  background_health_checks: false
  disable_reset_budget: true
  proxy_batch_write_at: 60
"""
    )
    return path


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "LITELLM_"))}
    out.update(
        LITELLM_MASTER_KEY=MASTER_KEY,
        LITELLM_TELEMETRY="False",
        LITELLM_LOG="ERROR",
        # no internet here: use the bundled model cost map instead of fetching it
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        DISABLE_SCHEMA_UPDATE="True",
        NO_DOCS="True",
        NO_PROXY="*",
    )
    return out


def start(config: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """`litellm --config ... --num_workers 1` on 127.0.0.1:port, output to log_path."""
    exe = ensure_venv()
    log = log_path.open("wb")
    return subprocess.Popen(
        [
            str(exe),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        env=env(),
        cwd=config.parent,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


if __name__ == "__main__":
    print(ensure_venv())
