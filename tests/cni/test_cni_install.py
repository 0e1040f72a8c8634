"""Installing the plugin, how fast it starts, and what it imports."""

from __future__ import annotations

import json
import os
import stat
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import whereabouts_py
from whereabouts_py.cli import main as cli_main
from whereabouts_py.cni.install import install_cni

PACKAGE_PARENT = str(Path(whereabouts_py.__file__).resolve().parent.parent)
OUR_STDLIB_ONLY_MODULES = {"whereabouts_py", "whereabouts_py.errors", "whereabouts_py.cni"}
HEAVY_STDLIB = {"argparse", "logging", "asyncio", "email", "http", "ssl", "subprocess"}


def _loaded_modules(module: str) -> list[str]:
    code = (
        "import json, sys; "
        f"sys.path.insert(0, {PACKAGE_PARENT!r}); "
        f"import {module}; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    output = subprocess.run(
        [sys.executable, "-S", "-E", "-c", code], capture_output=True, check=True, text=True
    ).stdout
    loaded: list[str] = json.loads(output)
    return loaded


def _foreign(modules: list[str]) -> list[str]:
    def allowed(name: str) -> bool:
        if name.startswith("whereabouts_py"):
            return name in OUR_STDLIB_ONLY_MODULES or name.startswith("whereabouts_py.cni.")
        return name == "__main__" or name.partition(".")[0] in sys.stdlib_module_names

    return [name for name in modules if not allowed(name)]


def test_the_shim_imports_only_the_standard_library_and_stdlib_only_modules() -> None:
    loaded = _loaded_modules("whereabouts_py.cni.shim")
    assert _foreign(loaded) == []
    assert "whereabouts_py.cni.shim" in loaded
    assert not HEAVY_STDLIB & set(loaded), HEAVY_STDLIB & set(loaded)


def test_the_shim_leaves_out_os_and_the_collection_abcs() -> None:
    # Each CNI call is a new process: os (with _collections_abc) is about 2 ms of it.
    code = (
        f"import sys; sys.path.insert(0, {PACKAGE_PARENT!r}); "
        "import whereabouts_py.cni.shim; "
        "sys.stdout.write(' '.join(sorted(sys.modules)))"
    )
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], check=True, capture_output=True, text=True
    )
    loaded = set(run.stdout.split())
    assert "whereabouts_py.cni.shim" in loaded, run.stderr
    assert not {"os", "_collections_abc", "typing", "json", "re", "socket"} & loaded


@pytest.mark.parametrize(
    "module",
    ["whereabouts_py.cni.install", "whereabouts_py.cni.bundle", "whereabouts_py.cni.results"],
)
def test_other_cni_modules_are_stdlib_only_too(module: str) -> None:
    assert _foreign(_loaded_modules(module)) == []


def test_install_writes_an_executable_atomically(tmp_path: Path) -> None:
    bin_dir = tmp_path / "opt" / "cni" / "bin"
    target = install_cni(bin_dir, "whereabouts")
    assert target == bin_dir / "whereabouts"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    first_line = target.read_text().splitlines()[0]
    assert first_line == f"#!{sys.executable} -IS"
    assert os.listdir(bin_dir) == ["whereabouts"], "no temporary file left behind"

    previous_inode = target.stat().st_ino
    install_cni(bin_dir, "whereabouts")  # replaces, never edits in place
    assert target.stat().st_ino != previous_inode
    assert os.listdir(bin_dir) == ["whereabouts"]


@pytest.mark.parametrize("name", ["", "a/b", ".."])
def test_install_refuses_a_bad_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid plugin file name"):
        install_cni(tmp_path, name)


def test_installed_under_another_name_answers_to_that_ipam_type(
    tmp_path: Path, daemon: Any, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    plugin = install_cni(tmp_path, "whereabouts-py")
    env = {"CNI_COMMAND": "DEL", "WHEREABOUTS_PY_SOCKET": daemon.path} | attachment_env
    data = json.dumps(network_config).encode()
    refused = subprocess.run([plugin], input=data, env=env, capture_output=True, check=False)
    assert json.loads(refused.stdout)["code"] == 7
    assert b"'whereabouts-py'" in refused.stdout

    network_config["ipam"]["type"] = "whereabouts-py"
    data = json.dumps(network_config).encode()
    accepted = subprocess.run([plugin], input=data, env=env, capture_output=True, check=False)
    assert (accepted.returncode, accepted.stdout) == (0, b"")


def test_cli_install_cni(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["install-cni", "--bin-dir", str(tmp_path), "--name", "wb"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "wb")
    assert os.access(tmp_path / "wb", os.X_OK)


def test_python_dash_m_runs_the_shim() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "whereabouts_py.cni"],
        input=b'{"cniVersion": "0.4.0"}',
        env={"CNI_COMMAND": "VERSION", "PYTHONPATH": PACKAGE_PARENT},
        capture_output=True,
        check=False,
    )
    assert completed.returncode == 0, completed
    assert json.loads(completed.stdout)["cniVersion"] == "0.4.0"


def test_python_dash_m_answers_to_whereabouts_by_default(
    daemon: Any, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    env = {"CNI_COMMAND": "DEL", "WHEREABOUTS_PY_SOCKET": daemon.path, "PYTHONPATH": PACKAGE_PARENT}
    completed = subprocess.run(
        [sys.executable, "-m", "whereabouts_py.cni"],
        input=json.dumps(network_config).encode(),
        env=env | attachment_env,
        capture_output=True,
        check=False,
    )
    assert (completed.returncode, completed.stdout) == (0, b"")


def _run_times(command: list[str], runs: int, stdin: bytes, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, input=stdin, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return times


def test_start_up_time(shim: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"}
    shim_times = _run_times([str(shim)], 20, b'{"cniVersion": "1.0.0"}', env)
    bare_times = _run_times([sys.executable, "-IS", "-c", "pass"], 20, b"", env)
    shim_p50 = statistics.median(shim_times) * 1000
    bare_p50 = statistics.median(bare_times) * 1000
    with capsys.disabled():
        print(
            f"\nshim VERSION start-up over 20 runs: p50 {shim_p50:.1f} ms,"
            f" max {max(shim_times) * 1000:.1f} ms"
            f" (bare `python -IS -c pass`: p50 {bare_p50:.1f} ms)"
        )
    assert shim_p50 < 300


def test_the_installed_shim_flushes_its_answer_and_exit_code_before_leaving(
    tmp_path: Path,
) -> None:
    """``run`` leaves without the interpreter's teardown: nothing written may be lost."""
    plugin = install_cni(tmp_path)
    version = subprocess.run(
        [plugin],
        input=b'{"cniVersion": "0.3.1"}',
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        check=False,
    )
    assert version.returncode == 0
    assert json.loads(version.stdout)["cniVersion"] == "0.3.1"
    refused = subprocess.run(
        [plugin], input=b"{}", env={"CNI_COMMAND": "BOGUS"}, capture_output=True, check=False
    )
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["code"] == 4


def test_run_flushes_stdout_and_stderr_then_exits_with_mains_code(tmp_path: Path) -> None:
    # main() is replaced by one that writes to both streams without flushing and
    # returns 3: the process must end with code 3 and both texts complete.
    code = (
        "import sys\n"
        f"sys.path.insert(0, {PACKAGE_PARENT!r})\n"
        "from whereabouts_py.cni import shim\n"
        "def main(plugin_type=None):\n"
        "    sys.stdout.write('out' * 5000)\n"
        "    sys.stderr.write('err-no-newline')\n"
        "    return 3\n"
        "shim.main = main\n"
        "shim.run()\n"
        "print('never reached')\n"
    )
    completed = subprocess.run(
        [sys.executable, "-IS", "-c", code], capture_output=True, check=False, text=True
    )
    assert completed.returncode == 3
    assert completed.stdout == "out" * 5000
    assert completed.stderr == "err-no-newline"
