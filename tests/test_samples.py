"The committed data_samples/ are exactly what the generators make, and hold what the chapters rely on."
import importlib, re, shutil, subprocess, sys

from llmcourse.core import read_jsonl
from llmcourse.samples import SAMPLE_FILES, generate_samples

# names other modules, notebooks, tests and benchmarks import from llmcourse.samples (the generators
# themselves live in one module per family of corpora, written by the appendix notebooks 01a to 01d)
SAMPLES_API = [
    "SAMPLE_FILES", "SAMPLE_SEED", "build_samples", "generate_samples", "load_samples", "samples_readme",
    "stdlib_dir", "stdlib_code_documents", "stdlib_prose_documents", "make_knowledge_and_eval",
]
GENERATORS = {  # generator -> the appendix module that defines it
    "make_web_documents": "samples_web", "render_web_page": "samples_web",
    "make_entities": "samples_world", "make_fact_table": "samples_world",
    "make_knowledge_documents": "samples_world", "make_probes": "samples_world", "make_mcq": "samples_world",
    "plant_contamination": "samples_world",
    "make_math_problems": "samples_math_code", "make_code_snippets": "samples_math_code",
    "make_long_documents": "samples_long",
}


def test_regeneration_is_byte_identical(repo_root, tmp_path):
    written = generate_samples(tmp_path)
    assert sorted(p.name for p in written) == sorted([*SAMPLE_FILES, "README.md"])
    committed = sorted(p.name for p in (repo_root / "data_samples").iterdir())
    made = sorted(p.name for p in written)
    assert committed == made, "data_samples/ holds files the generators do not make"
    for p in written:
        fix = "run `llmcourse samples --out data_samples`"
        same = p.read_bytes() == (repo_root / "data_samples" / p.name).read_bytes()
        assert same, f"{p.name} differs: {fix}"


def test_regeneration_in_a_fresh_interpreter_with_other_hash_seed(repo_root, tmp_path):
    "Nothing depends on PYTHONHASHSEED (set ordering) or the working directory."
    code = "import sys\nfrom llmcourse.samples import generate_samples\ngenerate_samples(sys.argv[1])"
    env = {"PYTHONHASHSEED": "12345", "PATH": ""}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=tmp_path, env=env)
    for name in SAMPLE_FILES:
        assert (tmp_path / name).read_bytes() == (repo_root / "data_samples" / name).read_bytes(), name


def test_check_command_accepts_committed_folder_rejects_changed_one(llmcourse_exe, repo_root, tmp_path):
    "The README's `llmcourse samples --out DIR --check` exits 0 on data_samples/ and 1 when a byte changed."
    ok = subprocess.run([llmcourse_exe, "samples", "--out", str(repo_root / "data_samples"), "--check"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    changed = tmp_path / "changed"
    shutil.copytree(repo_root / "data_samples", changed)
    data = bytearray((changed / "math.jsonl").read_bytes())
    data[20] ^= 1
    (changed / "math.jsonl").write_bytes(bytes(data))
    bad = subprocess.run(
        [llmcourse_exe, "samples", "--out", str(changed), "--check"], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "math.jsonl" in bad.stdout, bad.stdout + bad.stderr


def test_names_other_code_imports_stay_in_llmcourse_samples():
    samples = importlib.import_module("llmcourse.samples")
    missing = [n for n in [*SAMPLES_API, *GENERATORS] if not hasattr(samples, n)]
    assert not missing, f"llmcourse.samples no longer offers {missing}"
    for name, module in GENERATORS.items():  # re-exported, not a second copy
        assert getattr(samples, name) is getattr(importlib.import_module(f"llmcourse.{module}"), name), name


def test_appendix_modules_import_only_down():
    "An appendix module imports only from appendix modules before it (01a < 01b < 01c < 01d), never from 01."
    order = ["samples_web", "samples_world", "samples_math_code", "samples_long"]
    for i, module in enumerate(order):
        source = importlib.import_module(f"llmcourse.{module}").__file__
        with open(source, encoding="utf-8") as f:
            imported = set(re.findall(r"^from \.(\w+) import", f.read(), flags=re.M))
        assert imported <= set(order[:i]), (module, imported - set(order[:i]))


def test_size_budget_and_schema(repo_root):
    total = sum(p.stat().st_size for p in (repo_root / "data_samples").iterdir())
    assert total <= 10 * 2**20, f"data_samples is {total / 2**20:.1f} MiB, over the 10 MiB budget"
    schema = {"id": str, "text": str, "domain": str, "lang": str}
    folder = repo_root / "data_samples"
    ids = [d["id"] for name in SAMPLE_FILES for d in read_jsonl(folder / name, schema=schema)]
    assert len(ids) == len(set(ids))


def test_readme_lists_every_file(repo_root):
    readme = (repo_root / "data_samples" / "README.md").read_text(encoding="utf-8")
    for name in SAMPLE_FILES:
        assert f"| `{name}` |" in readme
    assert "llmcourse samples --out data_samples" in readme
