"The committed data_samples/ are exactly what the generators make, and hold what the chapters rely on."
import json, subprocess, sys
from pathlib import Path

from llmcourse.core import read_jsonl
from llmcourse.samples import SAMPLE_FILES, generate_samples


def test_regeneration_is_byte_identical(repo_root, tmp_path):
    written = generate_samples(tmp_path)
    assert sorted(p.name for p in written) == sorted([*SAMPLE_FILES, "README.md"])
    committed = sorted(p.name for p in (repo_root / "data_samples").iterdir())
    assert committed == sorted(p.name for p in written), "data_samples/ holds files the generators do not make"
    for p in written:
        assert p.read_bytes() == (repo_root / "data_samples" / p.name).read_bytes(), f"{p.name} differs: run `llmcourse samples --out data_samples`"


def test_regeneration_in_a_fresh_interpreter_with_other_hash_seed(repo_root, tmp_path):
    "Nothing depends on PYTHONHASHSEED (set ordering) or the working directory."
    code = "import sys; from llmcourse.samples import generate_samples; generate_samples(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=tmp_path, env={"PYTHONHASHSEED": "12345", "PATH": ""})
    for name in SAMPLE_FILES: assert (tmp_path / name).read_bytes() == (repo_root / "data_samples" / name).read_bytes(), name


def test_size_budget_and_schema(repo_root):
    total = sum(p.stat().st_size for p in (repo_root / "data_samples").iterdir())
    assert total <= 10 * 2**20, f"data_samples is {total/2**20:.1f} MiB, over the 10 MiB budget"
    schema = {"id": str, "text": str, "domain": str, "lang": str}
    ids = [d["id"] for name in SAMPLE_FILES for d in read_jsonl(repo_root / "data_samples" / name, schema=schema)]
    assert len(ids) == len(set(ids))


def test_readme_lists_every_file(repo_root):
    readme = (repo_root / "data_samples" / "README.md").read_text(encoding="utf-8")
    for name in SAMPLE_FILES: assert f"| `{name}` |" in readme
    assert "llmcourse samples --out data_samples" in readme
