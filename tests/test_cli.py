"The `llmcourse` command end to end, as a user runs it (a subprocess, outside the repository)."
import json, subprocess
from pathlib import Path

from llmcourse.samples import EVAL_FILES, SAMPLE_FILES, TRAIN_FILES


def _run(exe, *args, cwd):
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def test_help(llmcourse_exe, tmp_path):
    for args in [["--help"], ["run", "--help"], ["samples", "--help"]]:
        r = _run(llmcourse_exe, *args, cwd=tmp_path)
        assert r.returncode == 0 and "usage: llmcourse" in r.stdout, r.stderr
    assert "sources (read every source once" in _run(llmcourse_exe, "run", "--help", cwd=tmp_path).stdout
    assert _run(llmcourse_exe, cwd=tmp_path).returncode == 2  # a command is required


def test_run_on_committed_samples(llmcourse_exe, repo_root, tmp_path):
    "The README's main job, run from an unrelated folder: every artefact of the run folder exists and adds up."
    out = tmp_path / "run"
    r = _run(llmcourse_exe, "run", "--data", str(repo_root / "data_samples"), "stdlib", "--out", str(out), "--stdlib-files", "30", "--train-steps", "12", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "report:" in r.stdout
    for f in ["config.json", "summary.json", "report.md", "01_sources/inventory.json", "01_sources/rejects.jsonl",
              "01_sources/eval.jsonl", "01_sources/sizes.png", "01_sources/lengths.png"]:
        assert (out / f).exists(), f
    assert not (out / "samples").exists()  # --data given: nothing regenerated
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"] == [str(repo_root / "data_samples"), "stdlib"] and cfg["stdlib_files"] == 30
    inv = json.loads((out / "01_sources" / "inventory.json").read_text())
    for name in TRAIN_FILES:
        lines = (repo_root / "data_samples" / name).read_bytes().splitlines()
        assert inv["sources"]["samples"]["files"][name]["docs"] == len(lines), name
    assert inv["sources"]["samples"]["bytes"] == sum((repo_root / "data_samples" / f).stat().st_size for f in TRAIN_FILES)
    assert inv["rejected"] == 0 and (out / "01_sources" / "rejects.jsonl").read_text() == ""
    stdlib = inv["sources"]["stdlib"]["files"]
    assert stdlib["<stdlib code>"]["docs"] == 30 and stdlib["<stdlib prose>"]["docs"] > 30
    assert inv["eval_items"] == sum(len((repo_root / "data_samples" / f).read_bytes().splitlines()) for f in EVAL_FILES)
    assert json.loads((out / "summary.json").read_text())["sources"]["status"] == "ok"
    report = (out / "report.md").read_text()
    assert "## 1. sources" in report and "](01_sources/sizes.png)" in report
    assert "## 2. clean" in report and "](02_clean/clean.png)" in report
    cs = json.loads((out / "02_clean" / "clean_stats.json").read_text())
    assert cs["read"] == cs["kept"] + cs["rejected"] and cs["kept"] == len((out / "02_clean" / "kept.jsonl").read_text().splitlines())
    ds = json.loads((out / "03_dedup" / "dedup_stats.json").read_text())
    assert ds["read"] == cs["kept"] == ds["kept"] + ds["removed"] and "## 3. dedup" in report and "](03_dedup/dedup.png)" in report
    assert ds["contamination"]["removed_docs"] > 0 and ds["by_reason"]["near_duplicate"] > 0
    assert "## 4. tokenizer" in report and "](04_tokenizer/compression.png)" in report and (out / "04_tokenizer/compression.png").exists()
    from llmcourse.data import PackedLoader, TokenShards
    shards = TokenShards(out / "05_shards")
    stats = json.loads((out / "05_shards" / "shards_stats.json").read_text())
    assert len(shards) == stats["n_docs"] and sum(len(shards.doc(i)) for i in range(len(shards))) == stats["n_tokens"]
    eos = json.loads((out / "04_tokenizer" / "tokenizer_stats.json").read_text())["specials"]["<|endoftext|>"]
    batch = next(iter(PackedLoader(shards, 128, 2, eos)))
    assert tuple(batch["input_ids"].shape) == (2, 128) and "## 5. shards" in report
    ts = json.loads((out / "06_train" / "train_summary.json").read_text())
    assert ts["steps"] == 12 and (out / "06_train" / "latest").exists() and "## 6. train" in report
    ev = json.loads((out / "07_evaluate" / "eval.json").read_text())
    assert "## 7. evaluate" in report and "](07_evaluate/niah.png)" in report and ev["mcq"]["n"] == 600
    assert set(ev["perplexity"]) >= {"web/en", "knowledge/zh", "code/python"} and all(0 < v["bits_per_byte"] < 20 for v in ev["perplexity"].values())
    base, whole = ev["baselines"], ev["perplexity_all"]  # n-gram baselines on exactly the tokens the model was scored on
    assert all((base[k]["tokens"], base[k]["bytes"]) == (whole["tokens"], whole["bytes"]) for k in ("unigram", "bigram"))
    assert base["bigram"]["bits_per_byte"] < base["unigram"]["bits_per_byte"] and f"bigram {base['bigram']['bits_per_byte']:.3f}" in report
    assert ev["continuations"]["n"] == 200 and "Which line comes next (200 questions" in report
    assert len(ev["generations"]) == len(ev["generations_sampled"]) == 4 and "Sampled generations (" in report
    assert all(g["degenerate"] == "" or g["degenerate"] in report for g in ev["generations"])
    r = _run(llmcourse_exe, "eval", str(out), "--data", str(repo_root / "data_samples"), "--probes", "20", "--mcq", "20", "--continuations", "20", "--out", str(tmp_path / "ev"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ev2 = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev2["mcq"]["n"] == ev2["continuations"]["n"] == 20 and abs(ev2["perplexity_all"]["ppl"] - ev["perplexity_all"]["ppl"]) < 1e-6  # same model, same held-out text


def test_run_tokenizer_loads_in_transformers(llmcourse_exe, repo_root, tmp_path):
    "The tokenizer stage's tokenizer.json: transformers and our loader give the ids our trainer's tokenizer gives."
    from transformers import PreTrainedTokenizerFast
    from llmcourse.tokenizer import Tokenizer, tokenizer_corpus
    out = tmp_path / "run"
    r = _run(llmcourse_exe, "run", "--data", str(repo_root / "data_samples"), "--out", str(out), "--stdlib-files", "10",
             "--vocab-size", "2000", "--stages", "clean", "dedup", "tokenizer", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    stats = json.loads((out / "04_tokenizer" / "tokenizer_stats.json").read_text())
    assert stats["vocab_size"] == 2000 and stats["pattern"] == "digits" and stats["specials"]["<|endoftext|>"] == 2000 - 10
    path = out / "04_tokenizer" / "tokenizer.json"
    ours, fast = Tokenizer.load(path), PreTrainedTokenizerFast(tokenizer_file=str(path))
    held = [d["text"] for d in tokenizer_corpus(repo_root / "data_samples", 0) if d["heldout"]][:200]
    assert [fast.encode(t, add_special_tokens=False) for t in held] == [ours.encode(t) for t in held]
    assert all(fast.decode(ours.encode(t)) == t for t in held)
    assert len(ours.encode("12345")) == 5  # digits split


def test_run_tokenizer_bad_vocab_size(llmcourse_exe, repo_root, tmp_path):
    r = _run(llmcourse_exe, "run", "--data", str(repo_root / "data_samples"), "--out", str(tmp_path / "o"), "--stdlib-files", "0",
             "--vocab-size", "200", "--stages", "clean", "dedup", "tokenizer", cwd=tmp_path)
    assert r.returncode == 2 and "vocab_size=200 is too small" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()  # refused before any stage spent time


def test_run_without_data_generates_samples_and_config_rerun(llmcourse_exe, repo_root, tmp_path):
    "Installed use, away from the repo: no --data means the samples are generated, identical to the committed ones."
    out = tmp_path / "r1"
    r = _run(llmcourse_exe, "run", "--out", str(out), "--stdlib-files", "0", "--train-steps", "6", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in SAMPLE_FILES:
        assert (out / "samples" / name).read_bytes() == (repo_root / "data_samples" / name).read_bytes(), name
    r2 = _run(llmcourse_exe, "run", "--config", str(out / "config.json"), "--out", str(tmp_path / "r2"), "--stages", "sources", cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr
    assert json.loads((tmp_path / "r2" / "config.json").read_text())["stdlib_files"] == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    r3 = _run(llmcourse_exe, "run", "--config", str(out / "config.json"), "--stages", "sources", cwd=tmp_path)
    assert r3.returncode == 0, r3.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # no --out: a new runs/<time> folder, not the old one
    new = [p for p in (tmp_path / "runs").iterdir()]
    assert len(new) == 1 and json.loads((new[0] / "config.json").read_text())["stdlib_files"] == 0


def test_run_with_bad_data_records_rejects(llmcourse_exe, repo_root, tmp_path):
    data = tmp_path / "data"; data.mkdir()
    for name in SAMPLE_FILES: (data / name).write_bytes((repo_root / "data_samples" / name).read_bytes())
    with open(data / "code.jsonl", "ab") as f: f.write(b'{"id": "broken", "text": \n' + (data / "code.jsonl").read_bytes().splitlines(True)[0])
    r = _run(llmcourse_exe, "run", "--data", str(data), "--out", str(tmp_path / "run"), "--stdlib-files", "0",
             "--stages", "sources", "clean", cwd=tmp_path)  # what the bad lines touch; the later stages are tested above
    assert r.returncode == 0, r.stderr
    rej = [json.loads(l) for l in (tmp_path / "run" / "01_sources" / "rejects.jsonl").read_text().splitlines()]
    n = len((repo_root / "data_samples" / "code.jsonl").read_bytes().splitlines())
    clean_rej = [json.loads(l) for l in (tmp_path / "run" / "02_clean" / "rejected.jsonl").read_text().splitlines()]
    mine = sorted((x["line"], x["rule"]) for x in clean_rej if x["file"].endswith("code.jsonl"))
    assert mine == [(n + 1, "unreadable"), (n + 2, "duplicate_id")]  # the clean stage rejects both bad lines again, with reasons
    assert [(x["line"], x["reason"].split(" at ")[0]) for x in rej] == [(n + 1, "invalid JSON"), (n + 2, "duplicate id " + repr(json.loads((data / "code.jsonl").read_bytes().splitlines()[0])["id"]))]


def test_run_errors_are_clear(llmcourse_exe, tmp_path):
    r = _run(llmcourse_exe, "run", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 2 and "missing: no such file or folder" in r.stderr and "hf:NAME" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()  # refused before any stage ran
    (tmp_path / "c.json").write_text('{"out": "x", "bogus": 1}')
    r = _run(llmcourse_exe, "run", "--config", str(tmp_path / "c.json"), cwd=tmp_path)
    assert r.returncode == 2 and "unknown config keys ['bogus']" in r.stderr
    r = _run(llmcourse_exe, "run", "--stages", "nosuch", cwd=tmp_path)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_eval_missing_folder_is_named(llmcourse_exe, tmp_path):
    r = _run(llmcourse_exe, "eval", str(tmp_path / "nope"), cwd=tmp_path)
    assert r.returncode == 2 and f"{tmp_path / 'nope'}: no such folder" in r.stderr, r.stderr


def test_console_script_runs_chapter_15s_main():
    "The installed command is `main` as chapter 15 exports it (into llmcourse.pipeline), not a stale copy."
    from importlib.metadata import entry_points
    from llmcourse import pipeline
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "llmcourse"]
    assert ep.load() is pipeline.main, (
        f"the `llmcourse` script runs {ep.value}; chapter 15 exports the command as llmcourse.pipeline:main "
        "(set console_scripts in settings.ini to llmcourse=llmcourse.pipeline:main, then pip install -e .)")
