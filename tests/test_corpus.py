"`llmcourse corpus installed` end to end, on a small slice of this Python's installed packages."

import json, subprocess
from collections import Counter

import pytest

from llmcourse.data import TokenShards
from llmcourse.samples import installed_package


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def corpus(llmcourse_exe, tmp_path_factory):
    "A 3 MB corpus built by the console script from an unrelated folder: (run folder, stdout)."
    out = tmp_path_factory.mktemp("corpus") / "run"
    args = ["corpus", "installed", "--out", str(out), "--max-mb", "3", "--vocab-size", "600"]
    args += ["--workers", "2"]
    r = subprocess.run([llmcourse_exe, *args], cwd=out.parent, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_every_file_read_is_accounted_for(corpus):
    "Files read = cleaned + rejected with a reason; cleaned = kept + removed by dedup; kept = in the shards."
    out, _ = corpus
    inv = json.loads((out / "01_sources" / "inventory.json").read_text())
    read_rejects = _jsonl(out / "01_sources" / "rejects.jsonl")
    assert inv["rejected"] == len(read_rejects) and all(r["reason"] and r["file"] for r in read_rejects)
    files_read = inv["docs"] + len(read_rejects)
    clean_kept = _jsonl(out / "02_clean" / "kept.jsonl")
    clean_rejected = _jsonl(out / "02_clean" / "rejected.jsonl")
    assert len(clean_kept) + len(clean_rejected) == files_read
    assert all(r["reason"] and r["rule"] for r in clean_rejected)
    # the files rejected as they were read are rejected again by the clean stage, with the same reasons
    read_reasons = Counter(r["reason"] for r in read_rejects)
    assert not read_reasons - Counter(r["reason"] for r in clean_rejected)
    dedup_kept, removed = _jsonl(out / "03_dedup" / "kept.jsonl"), _jsonl(out / "03_dedup" / "removed.jsonl")
    assert len(dedup_kept) + len(removed) == len(clean_kept)
    assert {r["reason"] for r in removed} <= {"exact_duplicate", "near_duplicate"}
    train, held = TokenShards(out / "05_shards"), TokenShards(out / "05_shards" / "heldout")
    assert sorted(train.ids + held.ids) == sorted(d["id"] for d in dedup_kept)
    kinds = Counter(d["domain"] for d in clean_kept)  # code and docs both survive cleaning
    assert kinds["code"] > 0 and kinds["docs"] > 0


def test_heldout_packages_are_not_trained_on(corpus):
    "Whole packages are held out: none is on both sides; the split follows each document's own field."
    out, _ = corpus
    train, held = TokenShards(out / "05_shards"), TokenShards(out / "05_shards" / "heldout")
    train_packages = {installed_package(i) for i in train.ids}
    held_packages = {installed_package(i) for i in held.ids}
    assert train_packages and held_packages and not train_packages & held_packages
    held_ids = set(held.ids)
    for d in _jsonl(out / "03_dedup" / "kept.jsonl"):
        assert d["heldout"] == (d["id"] in held_ids) and d["package"] == installed_package(d["id"]), d["id"]


def test_report_totals_match_the_files(corpus):
    out, stdout = corpus
    rep = json.loads((out / "corpus.json").read_text())
    t = rep["totals"]
    train, held = TokenShards(out / "05_shards"), TokenShards(out / "05_shards" / "heldout")
    dedup_kept = _jsonl(out / "03_dedup" / "kept.jsonl")
    assert t["clean_kept"] == len(_jsonl(out / "02_clean" / "kept.jsonl"))
    assert t["clean_rejected"] == len(_jsonl(out / "02_clean" / "rejected.jsonl"))
    assert t["dedup_kept"] == len(dedup_kept)
    assert t["dedup_removed"] == len(_jsonl(out / "03_dedup" / "removed.jsonl"))
    assert (t["train_docs"], t["heldout_docs"]) == (len(train), len(held))
    assert (t["train_tokens"], t["heldout_tokens"]) == (int(train.lengths.sum()), int(held.lengths.sum()))
    assert all(rep["accounting"].values())
    packages = rep["packages"].values()
    assert sum(p.get("train_docs", 0) for p in packages) == len(train)
    assert sum(p.get("tokens", 0) for p in packages) == t["train_tokens"] + t["heldout_tokens"]
    assert sum(p.get("read", 0) for p in packages) == t["files_read"]
    assert sum(d["docs"] for d in rep["domains"].values()) == len(dedup_kept)
    kept_bytes = sum(len(d["text"].encode("utf-8")) for d in dedup_kept)
    assert sum(d["bytes"] for d in rep["domains"].values()) == kept_bytes
    licences = rep["licences"].values()
    assert licences and sum(v["train_docs"] + v["heldout_docs"] for v in licences) == len(dedup_kept)
    assert rep["train_shards"] == str(out / "05_shards")
    assert rep["heldout_shards"] == str(out / "05_shards" / "heldout")
    md = (out / "corpus.md").read_text()
    assert "## Licences" in md and "## Duplicates" in md and f"{t['train_tokens']:,} tokens" in md
    assert str(out / "05_shards") in stdout and "corpus.md" in stdout


def test_reference_command_trains_a_recorded_run_again(corpus, llmcourse_exe, tmp_path):
    "`llmcourse reference` lists the models, trains one again and ends where its record ended."
    from llmcourse.model import matmul_parameters
    from llmcourse.scaling import SMALL_BATCH_SWEEP, run_name, sweep_base, sweep_shape, train_together
    from llmcourse.training import TrainConfig, model_config

    out, _ = corpus
    shape = sweep_shape(32, 1)
    n = matmul_parameters(model_config(TrainConfig(model_overrides={"max_seq_len": 256, **shape}), 600))
    points = [
        {"budget": 1e10, "shape": shape, "N": n, "steps": s, "batch_size": 2, "lr": 3e-3, "lr_factor": 1.0}
        for s in (6, 12)
    ]
    for p in points:
        p["D"] = p["steps"] * 2 * 256
        p["C"] = 6.0 * n * p["D"]
    # the record, made in this process as the sweep made it
    base = sweep_base(SMALL_BATCH_SWEEP, out, tmp_path / "sweep", "cpu")
    runs = train_together(points, base, SMALL_BATCH_SWEEP["eval_rows"])
    best = min(runs, key=lambda r: r["loss"])
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"meta": {"vocab_size": 600, "corpus": {}}, "runs": runs}), encoding="utf-8")

    def cli(*args):
        return subprocess.run(
            [llmcourse_exe, "reference", *args, "--sweep", str(sweep), "--corpus", str(out)],
            capture_output=True,
            text=True,
            timeout=600,
        )

    listed = cli()
    assert listed.returncode == 0 and run_name(best) in listed.stdout and "1e10" in listed.stdout
    r = cli("1e10", "--out", str(tmp_path / "again"), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    again = [json.loads(x) for x in (tmp_path / "again" / "reference.jsonl").read_text().splitlines()]
    assert len(again) == 1 and again[0]["loss"] == best["loss"] and again[0]["curve"] == best["curve"]
    run = tmp_path / "again" / run_name(best)
    assert (run / "config.json").is_file() and (run / "latest").is_file()
    wrong = cli("3e21")
    assert wrong.returncode == 2 and "the budgets are 1e10" in wrong.stderr
    missing = subprocess.run(
        [llmcourse_exe, "reference", "--sweep", str(tmp_path / "none.json")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "none.json: no such file" in missing.stderr
