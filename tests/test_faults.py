"""The pipeline and the command under faults: kill -9 in every stage, a full disk, two runs in one folder,
hostile input lines, bad flags. Each test runs `llmcourse` as a user would (a subprocess) on a small copy of the
sample data, and checks what is left on disk."""
import json, os, random, re, resource, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from llmcourse.core import write_jsonl
from llmcourse.dedup import DedupConfig, dedup_corpus
from llmcourse.pipeline import STAGES
from llmcourse.samples import SAMPLE_FILES
from llmcourse.tokenizer import TRAIN_FILES

LINES = {"eval_mcq.jsonl": 30, "eval_probes.jsonl": 60, "long.jsonl": 20}   # the rest: 150 lines each
RUN_ARGS = ["--stdlib-files", "0", "--train-steps", "8", "--vocab-size", "1024"]


def _cmd(exe, *args, cwd, **kw):
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def small_data(repo_root, tmp_path_factory) -> Path:
    "The first lines of every sample file: the same kinds of documents, a run in seconds."
    d = tmp_path_factory.mktemp("small") / "data"
    d.mkdir()
    for name in SAMPLE_FILES:
        lines = (repo_root / "data_samples" / name).read_bytes().splitlines(keepends=True)
        (d / name).write_bytes(b"".join(lines[:LINES.get(name, 150)]))
    return d


@pytest.fixture(scope="module")
def reference(llmcourse_exe, small_data, tmp_path_factory) -> Path:
    "An uninterrupted run: what every interrupted and resumed run must end up equal to."
    out = tmp_path_factory.mktemp("ref") / "run"
    r = _cmd(llmcourse_exe, "run", "--data", str(small_data), "--out", str(out), *RUN_ARGS, cwd=out.parent)
    assert r.returncode == 0, r.stderr
    return out


# --- comparing two run folders -------------------------------------------------------------------------------

TIMING = re.compile(r"(^|_)(seconds|tokens_per_s|tokens_per_second|peak_mem_gb|mfu|time|started)($|_)")


def _scrub(obj, run_dir: str):
    "A JSON value with timings removed and the run's own folder replaced by <run>."
    if isinstance(obj, dict):
        return {k: _scrub(v, run_dir) for k, v in obj.items() if not TIMING.search(k)}
    if isinstance(obj, list): return [_scrub(v, run_dir) for v in obj]
    if isinstance(obj, str): return re.sub(r"[\d,.]+ (s\b|tokens/s)", r"<n> \1", obj.replace(run_dir, "<run>"))
    return obj


def _report_body(text: str, run_dir: str) -> str:
    "report.md without its timings (the table, and 'in N s' / 'N tokens/s' figures)."
    text = text.split("## Timings")[0].replace(run_dir, "<run>")
    return re.sub(r"[\d,.]+ (s\b|tokens/s)", r"<n> \1", text)


def _snapshot(run: Path) -> dict:
    "Every file of a run folder in a form two equal runs share: bytes, or scrubbed JSON; checkpoints as tensors."
    snap, root = {}, str(run)
    for p in sorted(run.rglob("*")):
        rel = p.relative_to(run).as_posix()
        if p.is_dir() or rel in ("summary.json", "history.jsonl") or p.name == ".lock" or "tensorboard" in rel:
            continue
        if p.suffix == ".pt":
            ck = torch.load(p, weights_only=True, map_location="cpu")
            snap[rel] = {k: v.clone() for k, v in ck["model"].items()}
        elif p.name.endswith(".pt.json"):
            snap[rel] = json.loads(p.read_text())["step"]
        elif p.suffix == ".json":
            snap[rel] = _scrub(json.loads(p.read_text(encoding="utf-8")), root)
        elif p.suffix == ".jsonl":
            snap[rel] = [_scrub(json.loads(l), root) for l in p.read_text(encoding="utf-8").splitlines()]
        elif p.name == "report.md":
            snap[rel] = _report_body(p.read_text(encoding="utf-8"), root)
        else:
            snap[rel] = p.read_bytes()
    return snap


def _assert_same_run(a: Path, b: Path):
    sa, sb = _snapshot(a), _snapshot(b)
    assert sorted(sa) == sorted(sb), set(sa) ^ set(sb)
    for k in sa:
        if k.endswith(".pt"):
            assert sa[k].keys() == sb[k].keys() and all(torch.equal(sa[k][n], sb[k][n]) for n in sa[k]), k
        else:
            assert sa[k] == sb[k], k


# --- kill -9 anywhere, run again: the same folder ----------------------------------------------------------------

def _status(run: Path, stage: str) -> str | None:
    try: return json.loads((run / "summary.json").read_text())[stage]["status"]
    except (OSError, ValueError, KeyError): return None


def _running(run: Path, pid: int) -> list[str]:
    "The stages process `pid` has started, from the run's history."
    try: lines = (run / "history.jsonl").read_text().splitlines()
    except OSError: return []
    recs = [json.loads(l) for l in lines if l.endswith("}")]
    return [r["stage"] for r in recs if r["pid"] == pid and r["status"] == "running"]


def test_kill_in_every_stage_then_rerun_equals_uninterrupted(llmcourse_exe, small_data, reference, tmp_path):
    "kill -9 (the whole process group, workers too) at a random moment of each stage; the next run finishes the job."
    out, rng, hits = tmp_path / "run", random.Random(0), []
    args = [llmcourse_exe, "run", "--data", str(small_data), "--out", str(out), *RUN_ARGS]
    names = [s.name for s in STAGES]
    for k, name in enumerate(names):
        if _status(out, name) == "ok":                 # finished by an earlier run: nothing of it left to kill
            continue
        p = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 300
        while not set(_running(out, p.pid)) & set(names[k:]) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))                # soon after the stage starts: inside it unless it is very short
        if p.poll() is None:
            started = _running(out, p.pid)
            hits.append(started[-1] if started else "start-up")
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        assert p.returncode in (0, -signal.SIGKILL), p.stderr.read().decode()
    print("killed during:", hits)
    assert len(set(hits)) >= 4                # kills landed inside several different stages
    r = _cmd(llmcourse_exe, "run", "--data", str(small_data), "--out", str(out), *RUN_ARGS, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not list(out.glob("*.partial")) and not list(out.glob("*.old"))
    _assert_same_run(reference, out)


def test_rerun_of_a_finished_run_is_up_to_date(llmcourse_exe, small_data, reference, tmp_path):
    "Running the same command again redoes nothing; a changed setting re-runs its stage and those after it."
    import shutil
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    r = _cmd(llmcourse_exe, "run", "--data", str(small_data), "--out", str(out), *RUN_ARGS, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert {s["status"] for s in summary.values()} == {"up to date"}
    assert _report_body((out / "report.md").read_text(), str(out)) == \
        _report_body((reference / "report.md").read_text(), str(reference))
    r = _cmd(llmcourse_exe, "run", "--data", str(small_data), "--out", str(out), "--stdlib-files", "0",
             "--train-steps", "0", "--vocab-size", "1100", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [summary[s.name]["status"] for s in STAGES] == ["up to date"] * 3 + ["ok"] * 2 + ["skipped"] * 2
    report = (out / "report.md").read_text()
    assert "## 4. tokenizer" in report and "## 6. train" not in report       # the old model is not the new one's
    assert "- train: skipped: train_steps is 0" in report


# --- a stage that fails leaves nothing the next one could use ---------------------------------------------------

def _file_size_limit(n_bytes: int):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # a write past the limit fails with EFBIG, like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))
    return limit


def test_full_disk_in_a_stage_is_never_consumed(llmcourse_exe, small_data, reference, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = (out / "02_clean" / "kept.jsonl").read_bytes()
    limit = len(before) // 2                                 # the clean stage cannot write its kept.jsonl
    r = _cmd(llmcourse_exe, "run", "--data", str(small_data), "--out", str(out), "--stdlib-files", "0",
             "--stages", "clean", cwd=tmp_path, preexec_fn=_file_size_limit(limit))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "File too large" in r.stderr and "02_clean.partial" in r.stderr, r.stderr
    assert json.loads((out / "summary.json").read_text())["clean"]["status"] == "failed"
    assert (out / "02_clean" / "kept.jsonl").read_bytes() == before          # the finished output is untouched
    fresh = tmp_path / "fresh"
    r = _cmd(llmcourse_exe, "run", "--data", str(small_data), "--out", str(fresh), "--stdlib-files", "0",
             "--stages", "sources", "clean", cwd=tmp_path, preexec_fn=_file_size_limit(limit))
    assert r.returncode == 2 and not (fresh / "02_clean").exists()
    r = _cmd(llmcourse_exe, "run", "--out", str(fresh), "--stages", "dedup", cwd=tmp_path)
    assert r.returncode == 2 and "not the output of a finished 'clean' stage" in r.stderr, r.stderr
    assert "interrupted or failed" in r.stderr and not (fresh / "03_dedup").exists()


# --- one run per folder ------------------------------------------------------------------------------------------

def test_second_run_into_the_same_folder_stops_at_once(llmcourse_exe, small_data, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--data", str(small_data), "--out", str(out), *RUN_ARGS]
    first = subprocess.Popen([llmcourse_exe, *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while _status(out, "sources") is None and first.poll() is None: time.sleep(0.05)
        second = _cmd(llmcourse_exe, *args, cwd=tmp_path)
        assert first.poll() is None, "the first run ended before the second started"
        assert second.returncode == 2 and f"in use by another llmcourse run (pid {first.pid}" in second.stderr, second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    r = _cmd(llmcourse_exe, "run", "--data", str(small_data), "--out", str(out), "--stdlib-files", "0",
             "--train-steps", "0", "--vocab-size", "1024", cwd=tmp_path)    # the killed run's lock is taken over
    assert r.returncode == 0, r.stderr
    assert f"the run of pid {first.pid} stopped without finishing" in r.stderr


# --- every input line accounted for --------------------------------------------------------------------------------

HOSTILE = [b'{"id": "cut", "text": "half a li\n',                          # invalid JSON
           '{"id": "latin", "text": "caf\u00e9"}\n'.encode("latin-1"),      # not UTF-8
           b'{"id": "surrogate", "text": "a lone \\ud800 surrogate in an otherwise fine line"}\n',
           b'   \n',                                                        # blank
           b'{"id": "notext", "domain": "code", "lang": "python"}\n',     # no text
           b'["an", "array"]\n',                                            # not an object
           b'{"id": "empty", "text": "   ", "domain": "code", "lang": "python"}\n']


def test_hostile_lines_are_all_accounted_for(llmcourse_exe, small_data, tmp_path):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    code = data / "code.jsonl"
    first = code.read_bytes().splitlines(keepends=True)[0]
    emoji = b'{"id": "emoji", "text": "a pair \\ud83d\\ude00 is fine: def f(x):\\n    return x + 1\\n", ' \
            b'"domain": "code", "lang": "python"}\n'
    code.write_bytes(code.read_bytes() + b"".join(HOSTILE) + first + emoji)
    out = tmp_path / "run"
    r = _cmd(llmcourse_exe, "run", "--data", str(data), "--out", str(out), "--stdlib-files", "0",
             "--stages", "sources", "clean", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    n_lines = {f: len((data / f).read_bytes().splitlines()) for f in TRAIN_FILES}
    cs = json.loads((out / "02_clean" / "clean_stats.json").read_text())
    assert cs["read"] == sum(n_lines.values()) == cs["kept"] + cs["rejected"]   # blank lines included
    rejected = [json.loads(l) for l in (out / "02_clean" / "rejected.jsonl").read_text().splitlines()]
    base = n_lines["code.jsonl"] - len(HOSTILE) - 2
    mine = {x["line"] - base: x["rule"] for x in rejected if x["file"] == str(code) and x["line"] > base}
    assert mine == {1: "unreadable", 2: "unreadable", 3: "invalid_unicode", 4: "blank_line", 5: "missing_field",
                    6: "unreadable", 7: "empty", 8: "duplicate_id"}, mine
    assert not [x for x in rejected if x["id"] == "emoji" and x["rule"] in ("unreadable", "invalid_unicode")]
    inv = json.loads((out / "01_sources" / "inventory.json").read_text())["sources"]["samples"]["files"]["code.jsonl"]
    assert inv["docs"] + inv["rejected"] == n_lines["code.jsonl"]


def test_dedup_keeps_one_of_each_repeated_id(tmp_path):
    five = [{"id": f"d{k}", "text": f"document {k} has words of its own here " * 10, "domain": "web"} for k in range(5)]
    write_jsonl(tmp_path / "in.jsonl", five + five)
    st = dedup_corpus(tmp_path / "in.jsonl", tmp_path / "out", DedupConfig(workers=1))
    kept = [json.loads(l)["id"] for l in (tmp_path / "out" / "kept.jsonl").read_text().splitlines()]
    assert kept == [d["id"] for d in five] and st["by_reason"] == {"duplicate_id": 5}
    removed = [json.loads(l) for l in (tmp_path / "out" / "removed.jsonl").read_text().splitlines()]
    assert [(r["id"], r["line"]) for r in removed] == [(f"d{k}", 6 + k) for k in range(5)]
    assert not list((tmp_path / "out").glob("*.tmp"))


# --- flags and configs: a clear message before any work ------------------------------------------------------------

@pytest.mark.parametrize("flags, words", [
    (["--train-steps", "-1"], "train_steps=-1 must be"),
    (["--vocab-size", "100"], "vocab_size=100 is too small"),
    (["--stdlib-files", "-3"], "stdlib_files=-3 must be"),
    (["--dedup-threshold", "0"], "dedup_threshold=0.0 must be"),
    (["--seed", "-1"], "seed=-1 must be"),
])
def test_bad_numbers_are_refused_before_any_stage(llmcourse_exe, tmp_path, flags, words):
    r = _cmd(llmcourse_exe, "run", "--out", str(tmp_path / "o"), *flags, cwd=tmp_path)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_os_errors_are_one_line(llmcourse_exe, small_data, tmp_path):
    (tmp_path / "afile").write_text("x")
    r = _cmd(llmcourse_exe, "run", "--out", str(tmp_path / "afile"), cwd=tmp_path)
    assert r.returncode == 2 and "exists and is not a folder" in r.stderr, r.stderr
    r = _cmd(llmcourse_exe, "run", "--config", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and f"{tmp_path}: Is a directory" in r.stderr, r.stderr
    (tmp_path / "c.json").write_text('{"vocab_size": "512"}')
    r = _cmd(llmcourse_exe, "run", "--config", str(tmp_path / "c.json"), cwd=tmp_path)
    assert r.returncode == 2 and "vocab_size" in r.stderr and "Traceback" not in r.stderr, r.stderr
    (tmp_path / "latin.json").write_bytes('{"out": "caf\u00e9"}'.encode("latin-1"))
    r = _cmd(llmcourse_exe, "run", "--config", str(tmp_path / "latin.json"), cwd=tmp_path)
    assert r.returncode == 2 and "latin.json" in r.stderr and "Traceback" not in r.stderr, r.stderr
    from llmcourse.pipeline import describe_os_error            # the cases a root test machine cannot produce
    import errno
    assert describe_os_error(PermissionError(errno.EACCES, "Permission denied", "/srv/runs")) == \
        "/srv/runs: Permission denied"
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/d/kept.jsonl")) == \
        "/d/kept.jsonl: no space left on the device"
    if os.geteuid() != 0:                                   # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        r = _cmd(llmcourse_exe, "run", "--data", str(small_data), "--out", str(ro / "run"), cwd=tmp_path)
        assert r.returncode == 2 and "Permission denied" in r.stderr, r.stderr


def test_saved_paths_are_absolute_and_eval_works_from_anywhere(llmcourse_exe, small_data, reference, tmp_path):
    cfg = json.loads((reference / "config.json").read_text())
    assert cfg["out"] == str(reference) and cfg["data"] == [str(small_data)]
    tcfg = json.loads((reference / "06_train" / "config.json").read_text())
    assert tcfg["out"] == str(reference / "06_train") and tcfg["shards"] == str(reference / "05_shards")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = _cmd(llmcourse_exe, "eval", str(reference), "--probes", "10", "--mcq", "10", "--out", str(tmp_path / "ev"),
             cwd=elsewhere)                                  # no --data: the run's own data, wherever we are
    assert r.returncode == 0, r.stderr
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev["mcq"]["n"] == 10
    stage = json.loads((reference / "07_evaluate" / "eval.json").read_text())
    assert ev["niah"] == stage["niah"]                       # the same haystack: the samples' long.jsonl
