"""The package as users install it: ranges that keep the torch a machine already has, a constraints
file that pins CI, and a wheel and sdist that work without the repository around them.

The wheel and sdist are built once (`python -m build`, the sdist first and the wheel from it); the
wheel is then installed into a fresh virtual environment outside the repository and run from an empty
folder. Whether pip keeps an installed torch is asked of pip's own resolver (`--dry-run --report`),
offline, in an environment whose packages are metadata-only stand-ins at chosen versions.
"""
import configparser
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / ".ci" / "constraints.txt"
GPU_MACHINE_TORCH = "2.11.0+cu130"  # the CUDA build preinstalled on the course's H200 machines
CI_TORCH = "2.13.0+cpu"  # what .ci/constraints.txt installs on a CPU machine
NO_PIP_CONFIG = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # no machine-wide index, links or caps


def _version() -> str:
    ini = configparser.ConfigParser(delimiters=["="])
    ini.read(ROOT / "settings.ini", encoding="utf-8")
    return ini["DEFAULT"]["version"]


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return {"wheel": next(out.glob("*.whl")), "sdist": next(out.glob("*.tar.gz"))}


def _wheel_metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(z.read(name).decode())


def _requirements(wheel: Path) -> list[Requirement]:
    return [Requirement(r) for r in _wheel_metadata(wheel).get_all("Requires-Dist")]


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_torch_range_keeps_the_gpu_machines_torch_and_admits_cis(dists):
    torch = next(r for r in _requirements(dists["wheel"]) if r.name == "torch")
    assert torch.marker is None, "torch is a base requirement"
    for version in (GPU_MACHINE_TORCH, "2.11.0", CI_TORCH, "2.13.0"):
        assert torch.specifier.contains(version), (version, str(torch))
    assert not torch.specifier.contains("2.5.1"), "FSDP2's public fully_shard needs torch 2.6"


def test_requirements_are_ranges_and_extras_exist(dists):
    meta = _wheel_metadata(dists["wheel"])
    assert set(meta.get_all("Provides-Extra")) == {"notebooks", "eval", "hf", "scale", "docs", "dev"}
    base = [r for r in _requirements(dists["wheel"]) if r.marker is None]
    assert not [str(r) for r in base if any(s.operator == "==" for s in r.specifier)], "exact pins"
    heavy = {"jupyterlab", "nbdev", "transformers", "lm-eval", "pytest", "triton", "datasets"}
    heavy |= {"ray", "datatrove"}
    assert not heavy & {canonicalize_name(r.name) for r in base}, "optional packages in the base install"
    by_extra = {}
    for r in _requirements(dists["wheel"]):
        for extra in ("notebooks", "eval", "hf", "scale", "dev"):
            if r.marker is not None and r.marker.evaluate({"extra": extra}):
                by_extra.setdefault(extra, set()).add(canonicalize_name(r.name))
    assert {"jupyterlab", "ipykernel", "nbdev", "transformers"} <= by_extra["notebooks"]
    assert {"lm-eval", "transformers"} <= by_extra["eval"]
    assert by_extra["hf"] == {"datasets"} and "datasets" in by_extra["notebooks"]
    assert by_extra["scale"] == {"ray", "datatrove", "orjson"} and "ray" in by_extra["notebooks"]
    extras = by_extra["notebooks"] | by_extra["eval"] | by_extra["hf"] | by_extra["scale"]
    assert extras | {"pytest", "nbclient", "build"} <= by_extra["dev"]


def test_constraints_pin_every_requirement_inside_its_range(dists):
    pins = _pins()
    for r in _requirements(dists["wheel"]):
        name = canonicalize_name(r.name)
        assert name in pins, f"{r.name} has no pin in {CONSTRAINTS.name}"
        assert r.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {r}"
    assert pins["torch"] == "2.13.0", "a local label (+cpu) would not resolve from PyPI"


@pytest.mark.skipif(not os.environ.get("CI"), reason="a property of CI's environment (CI=true)")
def test_installed_packages_match_the_constraints():
    "CI installs with the constraints file: what its environment holds is what the file pins."
    from importlib.metadata import version

    pins = _pins()
    for name in ("torch", "numpy", "tokenizers", "transformers", "nbdev", "jupyterlab", "pytest"):
        assert version(name).split("+")[0] == pins[canonicalize_name(name)], name


def _metadata_wheel(folder: Path, name: str, version: str) -> Path:
    "A wheel that holds only the metadata of `name` `version`: enough for pip's resolver."
    info = f"{name}-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{info}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for member, text in files.items():
            z.writestr(member, text)
    return path


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=NO_PIP_CONFIG)


@pytest.mark.parametrize("installed, kept", [(GPU_MACHINE_TORCH, True), ("2.13.0", True), ("2.5.1", False)])
def test_pip_keeps_an_installed_torch_inside_the_range(dists, tmp_path, installed, kept):
    "pip's resolver, asked to install the wheel beside a torch, replaces that torch only when out of range."
    env, links = tmp_path / "env", tmp_path / "links"
    links.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    base = [r for r in _requirements(dists["wheel"]) if r.marker is None and r.name != "torch"]
    pins = _pins()
    others = [_metadata_wheel(links, r.name, pins[canonicalize_name(r.name)]) for r in base]
    present = _metadata_wheel(tmp_path, "torch", installed)
    _metadata_wheel(links, "torch", "2.13.0")  # the newest torch the index offers
    _pip(python, "install", "--no-index", "--no-deps", str(present), *map(str, others))
    report = tmp_path / "report.json"
    offline = ["--no-index", "--find-links", str(links)]
    _pip(python, "install", "--dry-run", *offline, "--report", str(report), str(dists["wheel"]))
    planned = json.loads(report.read_text())["install"]
    to_install = {i["metadata"]["name"]: i["metadata"]["version"] for i in planned}
    if kept:
        assert to_install == {"llmcourse": _version()}, f"pip would replace torch {installed}: {to_install}"
    else:
        assert to_install.get("torch") == "2.13.0", to_install


def test_sdist_holds_what_a_build_needs(dists):
    with tarfile.open(dists["sdist"]) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {"setup.py", "settings.ini", "pyproject.toml", "README.md"} <= names
    modules = {f"llmcourse/{p.name}" for p in (ROOT / "llmcourse").glob("*.py")}
    assert modules <= names, modules - names


def test_wheel_works_without_the_repository(dists, tmp_path):
    "A fresh venv outside the repository, the wheel and its dependencies, run from an empty folder."
    with zipfile.ZipFile(dists["wheel"]) as z:
        in_wheel = set(z.namelist())
    modules = {f"llmcourse/{p.name}" for p in (ROOT / "llmcourse").glob("*.py")}
    assert modules <= in_wheel, modules - in_wheel

    venv, work = tmp_path / "venv", tmp_path / "empty"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = [str(venv / "bin" / "pip"), "install", "-q", str(dists["wheel"]), "-c", str(CONSTRAINTS)]
    subprocess.run(install, check=True, capture_output=True, text=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["LLMCOURSE_PROGRESS"] = "0"

    def run(*args):
        return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)

    where = run(str(venv / "bin" / "python"), "-c", "import llmcourse; print(llmcourse.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    version = run(str(venv / "bin" / "llmcourse"), "--version")
    assert version.stdout.strip() == f"llmcourse {_version()}", version.stdout + version.stderr

    done = run(str(venv / "bin" / "llmcourse"), "run", "--stages", "sources", "clean", "--out", "run")
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = work / "run"
    for sample in sorted((ROOT / "data_samples").glob("*.jsonl")):
        generated = run_dir / "samples" / sample.name
        assert generated.read_bytes() == sample.read_bytes(), f"{sample.name} differs from data_samples/"
    stats = json.loads((run_dir / "02_clean" / "clean_stats.json").read_text())
    kept = sum(1 for _ in open(run_dir / "02_clean" / "kept.jsonl"))
    rejected = sum(1 for _ in open(run_dir / "02_clean" / "rejected.jsonl"))
    assert (stats["kept"], stats["rejected"]) == (kept, rejected) and kept + rejected == stats["read"] > 0
