"""The release artefacts are what they claim: manylinux_2_17 abi3 wheels for
x86_64 and aarch64 that install with pip alone and run, and an sdist that
builds.

Slow (builds, fresh venvs, emulation), so opt-in: the module runs only with
``EDGELESS_WHEELHOUSE`` naming a folder made by ``scripts/wheels.sh``, and
is skipped in a plain ``pytest tests``. ``scripts/test.sh`` runs the smoke
version: fast (no-LTO) wheels, every check below but the sdist build and
the full arm64 suite. ``EDGELESS_WHEELS_FULL=1`` adds those two and turns
every "not available here" skip into a failure:

    scripts/wheels.sh
    EDGELESS_WHEELHOUSE=wheelhouse EDGELESS_WHEELS_FULL=1 .venv/bin/python -m pytest -q tests/test_wheels.py
"""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from ports import free_port

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = os.environ.get("EDGELESS_WHEELHOUSE", "")
FULL = os.environ.get("EDGELESS_WHEELS_FULL", "") == "1"
ARCHES = ("x86_64", "aarch64")
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)  # type: ignore[union-attr]
# One wheel is downloaded onto an edge node: keep it small.
MAX_WHEEL_BYTES = 1_900_000  # as scripts/wheels.sh; README "Building from source": why not 1 MB

pytestmark = pytest.mark.skipif(
    not WHEELHOUSE, reason="packaging tests: run scripts/wheels.sh, then set EDGELESS_WHEELHOUSE=wheelhouse"
)


def unavailable(why: str) -> None:
    """Skips in the smoke run; fails in the full one, which must prove everything."""
    if FULL:
        pytest.fail(f"EDGELESS_WHEELS_FULL=1 but {why}")
    pytest.skip(why)


def wheelhouse() -> Path:
    return (ROOT / WHEELHOUSE).resolve() if not os.path.isabs(WHEELHOUSE) else Path(WHEELHOUSE)


def wheel(arch: str) -> Path:
    found = sorted(wheelhouse().glob(f"edgeless_telemetry-{VERSION}-cp310-abi3-*_{arch}.whl"))
    if not found:
        unavailable(f"no {arch} wheel of {VERSION} in {wheelhouse()}")
    assert len(found) == 1, f"several {arch} wheels: {found}"
    return found[0]


def run(cmd: list[str | Path], timeout: float, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc  # type: ignore[no-any-return]


def manylinux_2_17_policy(arch: str) -> tuple[set[str], dict[str, set[str]]]:
    """(allowed libraries, allowed symbol versions by prefix) from auditwheel's own policy file."""
    auditwheel = pytest.importorskip("auditwheel")
    policies = json.loads((Path(auditwheel.__file__).parent / "policy" / "manylinux-policy.json").read_text())
    policy = next(p for p in policies if p["name"] == "manylinux_2_17")
    return set(policy["lib_whitelist"]), {k: set(v) for k, v in policy["symbol_versions"][arch].items()}


@pytest.mark.parametrize("arch", ARCHES)
def test_auditwheel_says_manylinux_2_17(arch: str) -> None:
    path = wheel(arch)
    assert path.name.endswith(f"manylinux_2_17_{arch}.whl"), path.name
    out = run([sys.executable, "-m", "auditwheel", "show", path], timeout=120).stdout
    assert re.search(rf'consistent with the following platform tag:\s+"manylinux_2_17_{arch}"', out), out
    # Nothing needed beyond the policy: auditwheel would list it under
    # "The following external shared libraries are required by the wheel".
    assert "libraries are required" not in out, out
    # A `wheels.sh --fast` wheel (no LTO, the CI smoke) is bigger than a
    # release one and is not held to the limit.
    if not Path(f"{path}.fast-build").exists():
        assert path.stat().st_size <= MAX_WHEEL_BYTES, f"{path.name}: {path.stat().st_size} bytes"


@pytest.mark.parametrize("arch", ARCHES)
def test_extension_links_only_what_the_policy_allows(arch: str, tmp_path: Path) -> None:
    """Our own reading of the ELF file, not auditwheel's verdict: its machine,
    each library it needs and each symbol version it asks for."""
    elffile = pytest.importorskip("elftools.elf.elffile")
    libs, versions = manylinux_2_17_policy(arch)
    with zipfile.ZipFile(wheel(arch)) as zf:
        (so_name,) = [n for n in zf.namelist() if n.endswith(".so")]
        so = Path(zf.extract(so_name, tmp_path))
    with open(so, "rb") as f:
        elf = elffile.ELFFile(f)
        assert elf["e_machine"] == {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}[arch]
        needed = {t.needed for t in elf.get_section_by_name(".dynamic").iter_tags() if t.entry.d_tag == "DT_NEEDED"}
        asked: dict[str, set[str]] = {}
        for verneed, auxes in elf.get_section_by_name(".gnu.version_r").iter_versions():
            for aux in auxes:
                prefix, _, number = aux.name.partition("_")  # GLIBC_2.17
                asked.setdefault(verneed.name, set()).add(aux.name)
                assert number in versions.get(prefix, ()), f"{aux.name} (from {verneed.name})"
    # The dynamic loader is part of glibc on every system (auditwheel skips
    # it too); zig's link asks for it by name on x86_64 (__tls_get_addr).
    loader = {"x86_64": "ld-linux-x86-64.so.2", "aarch64": "ld-linux-aarch64.so.1"}[arch]
    assert needed and needed - {loader} <= libs, f"not in the manylinux_2_17 policy: {needed - libs - {loader}}"
    assert "libpython3" not in " ".join(needed), needed  # an extension must not link libpython
    glibc = max(tuple(map(int, v[len("GLIBC_"):].split("."))) for s in asked.values() for v in s
                if v.startswith("GLIBC_2"))
    assert glibc <= (2, 17), glibc


def find_python(version: str) -> str:
    """A CPython of that version: pyenv's, else one on PATH."""
    found = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))
    candidates = found[-1:] + [p for p in [shutil.which(f"python{version}")] if p]
    for exe in candidates:
        probe = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return exe
    unavailable(f"no python{version} here")
    raise AssertionError("unreachable")


def fresh_venv(python: str, where: Path) -> Path:
    run([python, "-m", "venv", where], timeout=120)
    return where / "bin"


def first_readme_example() -> str:
    block = re.search(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.M | re.S)
    assert block
    # The only change: its fixed port to a free one (as test_readme_examples does).
    return re.sub(r"127\.0\.0\.1:7003\b", f"127.0.0.1:{free_port()}", block.group(1))


@pytest.mark.parametrize("version", ["3.10", "3.11"])
def test_x86_64_wheel_installs_alone_and_runs_the_readme(version: str, tmp_path: Path) -> None:
    if platform.machine() != "x86_64":
        unavailable(f"this machine is {platform.machine()}")
    whl = wheel("x86_64")
    bin_dir = fresh_venv(find_python(version), tmp_path / "venv")
    # What a node operator runs: pip and the one file (its dependencies come from the index).
    run([bin_dir / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", whl], timeout=600)
    work = tmp_path / "work"  # not the checkout: nothing may come from python/ here
    work.mkdir()
    proc = run([bin_dir / "python", "-c", first_readme_example()], timeout=60, cwd=work)
    assert "[" in proc.stdout, proc.stdout  # it prints the drained arrays
    where = run([bin_dir / "python", "-c", "import edgeless_telemetry as e; print(e.__version__); print(e.__file__)"],
                timeout=60, cwd=work).stdout.split("\n")
    assert where[0] == VERSION and where[1].startswith(str(tmp_path / "venv")), where
    assert run([bin_dir / "edgeless-telemetry", "--version"], timeout=60, cwd=work).stdout.split() == [
        "edgeless-telemetry", VERSION]


def test_aarch64_wheel_on_arm64() -> None:
    """scripts/test-arm64.sh: the smoke script under qemu on a Debian arm64
    root (and, in the full run, the pytest selection too)."""
    whl = wheel("aarch64")
    cmd = [ROOT / "scripts" / "test-arm64.sh", "--wheel", whl] + ([] if FULL else ["--smoke"])
    proc = run(cmd, timeout=3600 if FULL else 900)
    assert re.search(r"smoke: \d+ checks passed on aarch64", proc.stdout), proc.stdout[-3000:]


def test_sdist_builds_and_imports(tmp_path: Path) -> None:
    if not FULL:
        pytest.skip("builds the Rust core from the sdist (minutes): EDGELESS_WHEELS_FULL=1")
    found = sorted(wheelhouse().glob(f"edgeless_telemetry-{VERSION}.tar.gz"))
    if not found:
        unavailable(f"no sdist of {VERSION} in {wheelhouse()}")
    sdist = found[0]
    with tarfile.open(sdist) as tf:
        names = tf.getnames()
    for needed in ("Cargo.toml", "Cargo.lock", "pyproject.toml", "rust/lib.rs",
                   "python/edgeless_telemetry/__init__.py"):
        assert f"edgeless_telemetry-{VERSION}/{needed}" in names, needed
    bin_dir = fresh_venv(sys.executable, tmp_path / "venv")
    # Its own cargo target folder, kept between runs (the dependencies build once).
    env = dict(os.environ, CARGO_TARGET_DIR=str(ROOT / "target" / "sdist-test"))
    run([bin_dir / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", sdist],
        timeout=1800, env=env)
    work = tmp_path / "work"
    work.mkdir()
    out = run([bin_dir / "python", "-c", "import edgeless_telemetry as e, numpy; "
               "p = e.TelemetryProcessor([e.PerformanceTarget()]); print(e.__version__, e.__file__)"],
              timeout=60, cwd=work).stdout.split()
    assert out[0] == VERSION and out[1].startswith(str(tmp_path / "venv")), out
