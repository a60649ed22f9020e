"""The pipeline on a user's own corpus: Parquet shards, a folder of .txt files, a saved Hugging Face dataset.

Each corpus carries the faults real data has (a missing field, a row that cannot be read, a text
that is not a string), and every record must come out kept or rejected with its source, file and row.
"""
import json, os, random, subprocess, sys
from collections import Counter
from pathlib import Path

import pytest

from llmcourse.core import read_jsonl, write_parquet
from llmcourse.samples import stdlib_prose_documents

PROSE = [d["text"] for d in stdlib_prose_documents(150)][:300]
FAST = ["--vocab-size", "600", "--train-steps", "0"]  # every data stage; no training


def _run(exe, *args, cwd):
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def _jsonl(path: Path) -> list[dict]:
    return list(read_jsonl(path, schema=None))


def _accounted(run: Path, n_records: int) -> dict:
    "Check that every record was read, and kept or rejected, by the sources and clean stages."
    inv = json.loads((run / "01_sources" / "inventory.json").read_text())
    clean = json.loads((run / "02_clean" / "clean_stats.json").read_text())
    assert inv["docs"] + inv["rejected"] == n_records
    assert clean["read"] == clean["kept"] + clean["rejected"] == n_records
    dedup = json.loads((run / "03_dedup" / "dedup_stats.json").read_text())
    assert dedup["read"] == clean["kept"] == dedup["kept"] + dedup["removed"]
    return inv


def test_parquet_corpus(llmcourse_exe, tmp_path):
    rows = [{"body": t, "key": f"k{i}", "topic": "docs"} for i, t in enumerate(PROSE[:120])]
    write_parquet(tmp_path / "c" / "a.parquet", rows[:60] + [{"body": None, "key": "null", "topic": "docs"}])
    write_parquet(tmp_path / "c" / "b.parquet", rows[60:])
    write_parquet(tmp_path / "c" / "numbers.parquet", [{"body": 7, "key": "n1", "topic": "docs"}])
    (tmp_path / "c" / "broken.parquet").write_bytes(b"PAR1 cut short")
    (tmp_path / "c" / "notes.md").write_text("not a corpus file")
    out = tmp_path / "run"
    r = _run(llmcourse_exe, "run", "--data", f"web={tmp_path / 'c'}", "--text-field", "body", "--id-field", "key",
             "--domain-field", "none", "--out", str(out), *FAST, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    inv = _accounted(out, 120 + 2 + 1)  # 122 rows, and the broken file: one reject, it holds no readable row
    rej = {(Path(x["file"]).name, x["line"]): x for x in _jsonl(out / "01_sources" / "rejects.jsonl")}
    assert sorted(rej) == [("a.parquet", 61), ("broken.parquet", None), ("numbers.parquet", 1)]
    assert rej[("a.parquet", 61)]["reason"] == "missing_field: field 'body' (the text field) is null"
    assert rej[("numbers.parquet", 1)]["reason"] == "bad_field: field 'body' should be a string, got int"
    assert rej[("broken.parquet", None)]["reason"].startswith("unreadable_file: not a readable Parquet file")
    assert {x["source"] for x in rej.values()} == {"web"}
    assert set(inv["sources"]["web"]["files"]) == {"a.parquet", "b.parquet", "numbers.parquet", "broken.parquet"}
    kept = _jsonl(out / "02_clean" / "kept.jsonl")
    assert {d["id"] for d in kept} <= {f"k{i}" for i in range(120)}                  # --id-field
    assert {d["domain"] for d in kept} == {"web"}                                      # no domain field: the source
    assert all(d["source"] == "web" and d["file"].endswith(".parquet") and d["line"] >= 1 for d in kept)
    cleaned = {(Path(x["file"]).name, x["line"]): x["rule"] for x in _jsonl(out / "02_clean" / "rejected.jsonl")}
    assert cleaned[("a.parquet", 61)] == "missing_field" and cleaned[("numbers.parquet", 1)] == "bad_field"
    report = (out / "report.md").read_text()
    assert "web, `a.parquet` line/row 61: missing_field" in report           # the report says where
    assert "Decontamination skipped: the run has no evaluation sets" in report
    removed = _jsonl(out / "03_dedup" / "removed.jsonl")
    assert removed and all(x["source"] == "web" and x["file"].endswith(".parquet") for x in removed)

    r = _run(llmcourse_exe, "run", "--data", str(tmp_path / "c" / "b.parquet"), "--text-field", "body",
             "--max-docs", "7", "--stages", "sources", "--out", str(tmp_path / "r7"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    inv7 = json.loads((tmp_path / "r7" / "01_sources" / "inventory.json").read_text())
    assert inv7["docs"] == 7 and list(inv7["sources"]) == ["b"]


def test_text_folder_ids_are_stable(llmcourse_exe, tmp_path):
    notes = tmp_path / "notes"
    for i, t in enumerate(PROSE[:50]):
        (notes / f"part{i % 3}").mkdir(parents=True, exist_ok=True)
        (notes / f"part{i % 3}" / f"{i:03d}.txt").write_text(t, encoding="utf-8")
    (notes / "latin1.txt").write_bytes("Caf\u00e9 cr\u00e8me".encode("latin-1"))
    (notes / "blank.txt").write_text("  \n")
    runs = []
    for name in ("r1", "r2"):
        out = tmp_path / name
        r = _run(llmcourse_exe, "run", "--data", str(notes), "--out", str(out), *FAST, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        _accounted(out, 52)
        runs.append(out)
    rej = {Path(x["file"]).name: x["reason"] for x in _jsonl(runs[0] / "01_sources" / "rejects.jsonl")}
    assert rej == {"latin1.txt": "invalid UTF-8 at byte 3 of the file (is it in another encoding?)",
                   "blank.txt": "empty: field 'text' is blank"}
    ids = [[d["id"] for d in _jsonl(r / "02_clean" / "kept.jsonl")] for r in runs]
    assert ids[0] == ids[1] and "notes:part0/000.txt:1" in ids[0]              # generated, and the same every run
    kept = _jsonl(runs[0] / "02_clean" / "kept.jsonl")
    assert {d["lang"] for d in kept} == {"en"} and all(d["lang_guessed"] for d in kept)   # guessed while cleaning
    assert {d["domain"] for d in kept} == {"notes"}


def test_saved_hf_dataset_with_eval_data(llmcourse_exe, tmp_path):
    datasets = pytest.importorskip("datasets", reason="needs llmcourse[hf]")
    texts = PROSE[:80] + [None, 12]
    table = {"text": [t if isinstance(t, str) else None for t in texts],
             "lang": ["en"] * len(texts), "uid": [f"u{i}" if i % 2 else None for i in range(len(texts))]}
    datasets.Dataset.from_dict(table).save_to_disk(tmp_path / "saved")
    datasets.Dataset.from_dict({"text": [3, 4]}).save_to_disk(tmp_path / "numbers")
    mcq = [{"id": f"q{i}", "text": f"Which word comes after {w}?", "choices": ["a", "b"], "answer": i % 2}
           for i, w in enumerate(["alpha", "beta", "gamma"])]
    probes = [{"id": "p0", "text": PROSE[3][:60], "answer": PROSE[3][60:70], "distractors": ["x", "y", "z"]}]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(x) + "\n" for x in mcq + probes))
    out = tmp_path / "run"
    r = _run(llmcourse_exe, "run", "--data", f"hf:{tmp_path / 'saved'}", f"num={tmp_path / 'numbers'}",
             "--id-field", "uid", "--eval-data", str(tmp_path / "eval.jsonl"), "--vocab-size", "600",
             "--train-steps", "4", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    inv = _accounted(out, 82 + 2)
    assert inv["eval_items"] == 4 and inv["sources"]["saved"]["kind"] == "hf"
    rej = [(x["source"], x["line"], x["reason"].split(":")[0]) for x in _jsonl(out / "01_sources" / "rejects.jsonl")]
    assert rej == [("saved", 81, "missing_field"), ("saved", 82, "missing_field"),
                   ("num", 1, "bad_field"), ("num", 2, "bad_field")]
    ids = [d["id"] for d in _jsonl(out / "02_clean" / "kept.jsonl")]
    assert "u1" in ids and f"saved:train:1" in ids                  # the id field where there is one, else generated
    ev = json.loads((out / "07_evaluate" / "eval.json").read_text())
    assert ev["mcq"]["n"] == 3 and set(ev["probes"]) == {"fact en", "true vs false en"}
    assert "niah" in ev and ev["skipped"] == {}                      # the held-out text is the haystack
    dedup = json.loads((out / "03_dedup" / "dedup_stats.json").read_text())
    assert dedup["contamination"]["indexed_items"] == 4


def _corpus(path: Path, n_docs: int, seed: int, n_lines: int = 40):
    "A generated corpus of distinct documents, words drawn from the standard library's docstrings."
    counts = Counter(w for t in PROSE for w in t.split() if w.isalpha())
    vocab = sorted(w for w, _ in counts.most_common(1500))  # a vocabulary even the smaller corpus uses up
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n_docs):
            lines = [" ".join(rng.choices(vocab, k=12)) for _ in range(n_lines)]
            f.write(json.dumps({"id": f"d{i}", "text": "\n".join(lines)}) + "\n")


PEAK = """
import json, sys, threading, time
from llmcourse.pipeline import RunConfig, run_pipeline

def anon_kib():  # resident memory that is not a mapped file (the token shards are mapped, and droppable)
    status = open("/proc/self/status").read()
    return int(status.split("RssAnon:")[1].split()[0])

peak = [anon_kib()]
def watch():
    while True:
        peak[0] = max(peak[0], anon_kib())
        time.sleep(0.005)
threading.Thread(target=watch, daemon=True).start()
cfg = RunConfig(out=sys.argv[2], data=[sys.argv[1]], workers=1, vocab_size=600, tokenizer_chars=1_000_000,
                shard_tokens=1 << 18, train_steps=0, stages=["sources", "clean", "dedup", "tokenizer", "shards"])
run_pipeline(cfg)
time.sleep(0.05)
print(json.dumps({"peak_kib": peak[0]}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from Linux's /proc")
def test_memory_does_not_grow_with_the_corpus(tmp_path):
    """Peak memory of the data stages on a corpus and on one four times larger, of documents alike in length.
    The text is streamed, never held: what grows is per-document bookkeeping (ids, signatures, offsets: a few
    hundred bytes to two kilobytes a document), well below the text added. The fixed working sets are capped
    by settings the smaller corpus already reaches: the tokenizer's sample (`tokenizer_chars`) and its 200
    held-out documents per group, one shard (`shard_tokens`), one chunk of signatures."""
    sizes, peaks = [], []
    for n in (2_000, 8_000):
        corpus = tmp_path / f"corpus{n}.jsonl"
        _corpus(corpus, n, seed=n, n_lines=80)
        env = os.environ | {"LLMCOURSE_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, "-c", PEAK, str(corpus), str(tmp_path / f"run{n}")],
                           capture_output=True, text=True, env=env, timeout=900)
        assert r.returncode == 0, r.stderr
        sizes.append(corpus.stat().st_size / 2**20)
        peaks.append(json.loads(r.stdout.splitlines()[-1])["peak_kib"] / 2**10)
        shards = json.loads((tmp_path / f"run{n}" / "05_shards" / "shards_stats.json").read_text())
        assert shards["n_docs"] > 0.8 * n                       # the documents went all the way through
    grown = peaks[1] - peaks[0]
    print(f"corpus {sizes[0]:.1f} -> {sizes[1]:.1f} MiB; peak anonymous RSS {peaks[0]:.0f} -> {peaks[1]:.0f} MiB "
          f"({grown * 2**10 / 6_000:.2f} KiB per added document)")
    assert grown < 0.5 * (sizes[1] - sizes[0])
