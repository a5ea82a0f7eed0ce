"""`pip install inferwatch` is the producer SDK alone; `inferwatch[worker]` adds the rest.

Two proofs: in this (worker) environment the SDK loads none of the worker's modules, and
a fresh venv with only the base install runs the SDK and gets a one-line hint, exit 2,
from the `inferwatch` command. The fresh venv installs aiokafka and msgspec from the
package index (pip's usual configuration: PIP_INDEX_URL, PIP_FIND_LINKS); ~10 s here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# Top-level modules of the worker extra and of its heavy transitive dependencies.
WORKER_MODULES = (
    "faust", "mode", "numpy", "river", "scipy", "pandas", "pyarrow", "clickhouse_connect",
    "chdb", "click", "ddsketch", "aiohttp", "yaml",
)
HINT = (
    "inferwatch: the worker commands need the worker extra (no module named 'click'): "
    "pip install 'inferwatch[worker]'"
)

# Construct a producer and time one inference against a port nothing listens on (the
# sender thread starts and fails to connect), then report the worker modules loaded.
SDK_PROGRAM = textwrap.dedent(
    """
    import json, sys
    from pipeline.sdk import Producer
    from pipeline.config import KafkaSettings, Settings

    producer = Producer(Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1")),
                        service="chat-api")
    with producer.track("gpt-x", request_id="r-1") as span:
        span.set(input_tokens=12, output_tokens=30)
    assert producer.stats.buffered == 1, producer.stats
    producer.close(timeout=0.2)
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in set(sys.argv[1:]))
    print(json.dumps(loaded))
    """
)


def _loaded_worker_modules(python: str | Path, program: str, cwd: Path = ROOT,
                           env: dict[str, str] | None = None) -> list[str]:
    out = subprocess.run(
        [str(python), "-c", program, *WORKER_MODULES],
        capture_output=True, text=True, timeout=120, check=True, cwd=cwd, env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_sdk_loads_nothing_of_the_worker() -> None:
    assert _loaded_worker_modules(sys.executable, SDK_PROGRAM) == []


def test_the_check_sees_worker_modules() -> None:
    """The same check on a worker module (the decoder reads array sizes with numpy)."""
    program = "import pipeline.sources.codec\n" + SDK_PROGRAM
    assert "numpy" in _loaded_worker_modules(sys.executable, program)


def test_the_base_install_is_aiokafka_and_msgspec() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("[")[0].strip() for d in project["dependencies"]}
    assert names == {"aiokafka", "msgspec"}
    worker = {d.split(">")[0].split("[")[0].strip() for d in
              project["optional-dependencies"]["worker"]}
    assert {"river", "clickhouse-connect", "numpy", "click"} <= worker
    assert "faust-streaming" not in worker  # the runtime is aiokafka's; faust is a peer
    # in the throughput benchmark only
    assert project["scripts"]["inferwatch"] == "pipeline.launcher:main"


def test_the_command_without_the_worker_extra_says_what_to_install() -> None:
    """click missing (as in an SDK-only install): one line on stderr, exit 2."""
    program = "import sys; sys.modules['click'] = None; from pipeline.launcher import main; main()"
    out = subprocess.run([sys.executable, "-c", program, "--help"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert (out.returncode, out.stderr.strip(), out.stdout) == (2, HINT, "")


def test_the_command_with_the_worker_extra_runs_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "Usage: " in out.stdout


def test_a_fresh_sdk_install(tmp_path: Path) -> None:
    """pip install of the project without extras: the SDK works, the worker is absent,
    and `inferwatch` (and `python -m pipeline`) print the hint and exit 2."""
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("pipeline", "schemas"):
        shutil.copytree(ROOT / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", src],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert install.returncode == 0, f"pip install failed (package index reachable?):\n" \
        f"{install.stdout}\n{install.stderr}"

    here = tmp_path / "elsewhere"  # not the checkout: import from the installed package
    here.mkdir()
    installed = subprocess.run(
        [python, "-c", "import importlib.util, json, sys; import pipeline; print(json.dumps("
         "[pipeline.__file__] + [m for m in sys.argv[1:] if importlib.util.find_spec(m)]))",
         *WORKER_MODULES],
        capture_output=True, text=True, timeout=120, check=True, cwd=here, env=env,
    )
    location, *present = json.loads(installed.stdout)
    assert location.startswith(str(venv)) and present == []

    assert _loaded_worker_modules(python, SDK_PROGRAM, cwd=here, env=env) == []
    for command in ([bin_dir / "inferwatch", "--help"], [python, "-m", "pipeline", "--help"]):
        out = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=here,
                             env=env)
        assert (out.returncode, out.stderr.strip(), out.stdout) == (2, HINT, ""), command


@pytest.mark.parametrize("name", ["Producer", "ProducerStats", "Span"])
def test_the_public_names(name: str) -> None:
    import pipeline.sdk
    import pipeline.sdk.producer

    assert getattr(pipeline.sdk, name) is getattr(pipeline.sdk.producer, name)
    assert name in pipeline.sdk.__all__
