"""The data stages on Ray Data (`--engine ray`): the same files as the process pool, whatever the partitioning,
a worker killed mid-stage, and an unreadable input file.

Ray starts a local instance of its own in each test process (2 CPUs here, as CI has). Nothing in these tests
times anything: equality of bytes is the whole check.
"""
import json, os, signal, subprocess, sys, threading, time
from pathlib import Path

import pytest

pytest.importorskip("ray.data", reason='Ray Data is not installed: pip install "llmcourse[scale]"')

from llmcourse.cleaning import CleanConfig, clean_corpus, read_documents  # noqa: E402
from llmcourse.dedup import DedupConfig, dedup_corpus  # noqa: E402
from llmcourse.samples import stdlib_code_documents  # noqa: E402
from llmcourse.tokenizer import TRAIN_FILES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data_samples"
EVALS = [DATA / "eval_probes.jsonl", DATA / "eval_mcq.jsonl"]
OUTPUTS = ("kept.jsonl", "removed.jsonl", "contamination.jsonl")
ENV = os.environ | {"LLMCOURSE_PROGRESS": "0"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Chapter 03's kept.jsonl of 250 documents of each sample file and 60 standard-library files (installed
    code), with the faults a corpus has: a line that is not JSON, a blank line, an id used twice, an exact copy."""
    tmp = tmp_path_factory.mktemp("corpus")
    bad: list = []
    docs = list(read_documents([DATA / f for f in TRAIN_FILES], bad))
    by_file: dict = {}
    for d in docs:
        by_file.setdefault(d["_file"], []).append(d)
    picked = [d for ds in by_file.values() for d in ds[:250]] + list(stdlib_code_documents(60))
    clean_corpus(iter(picked), tmp / "clean", CleanConfig(workers=1))
    lines = (tmp / "clean" / "kept.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[5])
    copy = json.dumps({**json.loads(lines[7]), "id": "copy-of-line-8"}, ensure_ascii=False)
    faults = ['{"id": "cut', "", json.dumps({**first, "text": "another text, same id"}), copy]
    lines = lines[:300] + faults + lines[300:]
    path = tmp / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pool_result(corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pool")
    return out, dedup_corpus(corpus, out, DedupConfig(workers=2), EVALS, remove_domains=("web", "code"))


def _same_files(a: Path, b: Path, names=OUTPUTS):
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _no_timings(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if not k.startswith("seconds") and k != "ray"}


def test_dedup_on_ray_equals_the_pool_for_any_partitioning(corpus, pool_result, tmp_path):
    import ray
    from llmcourse.core import start_ray

    pool_out, pool_stats = pool_result
    reasons = pool_stats["by_reason"]
    # the corpus exercises every kind of decision
    assert reasons["exact_duplicate"] and reasons["near_duplicate"] and reasons["contamination"]
    assert reasons["duplicate_id"] == 1 and reasons["unreadable"] == 2
    removed = [json.loads(x) for x in (pool_out / "removed.jsonl").read_text().splitlines()]
    assert next(r for r in removed if r["id"] == "copy-of-line-8")["reason"] == "exact_duplicate"
    start_ray(num_cpus=2)
    try:
        for parts in (1, 3, 8):
            out = tmp_path / f"ray{parts}"
            stats = dedup_corpus(corpus, out, DedupConfig(engine="ray", partitions=parts), EVALS, ("web", "code"))
            _same_files(pool_out, out)
            assert _no_timings(stats) == _no_timings(pool_stats)
            assert stats["ray"]["partitions"] == parts and stats["ray"]["rounds"][-1] == 0
    finally:
        ray.shutdown()


def test_a_ray_worker_killed_mid_stage_is_retried(corpus, pool_result, tmp_path):
    "kill -9 of a Ray worker while the stage runs: Ray runs its task again, and the files are the same."
    script = (
        "import sys; from pathlib import Path; from llmcourse.core import start_ray\n"
        "from llmcourse.dedup import DedupConfig, dedup_corpus\n"
        "start_ray(num_cpus=2)\n"
        "dedup_corpus(Path(sys.argv[1]), Path(sys.argv[2]), DedupConfig(engine='ray', partitions=6), "
        "[Path(p) for p in sys.argv[3:]], ('web', 'code'))\n"
    )
    out = tmp_path / "ray"
    args = [sys.executable, "-c", script, str(corpus), str(out), *map(str, EVALS)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    killed: list = []

    def kill_one_busy_worker():  # the first Ray worker seen running a task of the stage
        deadline = time.time() + 120
        while not killed and proc.poll() is None and time.time() < deadline:
            ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
            busy = [line.split(None, 1) for line in ps.splitlines() if "ray::" in line and "IDLE" not in line]
            busy = [(int(pid), name) for pid, name in busy if "Map" in name or "map" in name]
            if busy:
                os.kill(busy[0][0], signal.SIGKILL)
                killed.append(busy[0][1].strip())
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_one_busy_worker)
    watcher.start()
    _, err = proc.communicate(timeout=600)
    watcher.join()
    assert proc.returncode == 0, err[-3000:]
    assert killed, "no Ray worker was seen running a task of the stage"
    _same_files(pool_result[0], out)


def test_pipeline_on_ray_writes_what_the_pool_writes(llmcourse_exe, tmp_path):
    "The CLI as a user runs it, on the sample files, standard-library code and an unreadable file."
    data = tmp_path / "mine"
    data.mkdir()
    (data / "notes.txt").write_text("A short note of ours, kept or rejected like any other document.\n")
    (data / "latin1.txt").write_bytes("caf\xe9 cr\xe8me, not UTF-8".encode("latin-1"))
    (data / "broken.parquet").write_bytes(b"PAR1 cut short")
    common = ["--data", str(DATA), "stdlib:60", f"mine={data}", "--max-docs", "300", "--vocab-size", "600",
              "--stages", "sources", "clean", "dedup", "tokenizer", "shards"]
    runs = {}
    for engine in ("pool", "ray"):
        runs[engine] = tmp_path / engine
        r = subprocess.run([llmcourse_exe, "run", "--engine", engine, "--out", str(runs[engine]), *common],
                           capture_output=True, text=True, timeout=900, env=ENV, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
    pool, ray_run = runs["pool"], runs["ray"]
    _same_files(pool / "02_clean", ray_run / "02_clean", ("kept.jsonl", "rejected.jsonl"))
    _same_files(pool / "03_dedup", ray_run / "03_dedup")
    shard_files = sorted(p.relative_to(pool / "05_shards") for p in (pool / "05_shards").rglob("shard_*"))
    assert shard_files
    _same_files(pool / "05_shards", ray_run / "05_shards", [*map(str, shard_files), "index.json"])
    rejected = [json.loads(x) for x in (ray_run / "02_clean" / "rejected.jsonl").read_text().splitlines()]
    unreadable = {Path(x["file"]).name: x["reason"] for x in rejected if x["source"] == "mine"}
    assert unreadable["broken.parquet"].startswith("unreadable_file")
    assert unreadable["latin1.txt"].startswith("invalid_unicode") or "UTF-8" in unreadable["latin1.txt"]
    stats = json.loads((ray_run / "03_dedup" / "dedup_stats.json").read_text())
    assert stats["ray"]["rounds"][-1] == 0  # label propagation settled
    assert "On Ray Data" in (ray_run / "report.md").read_text()


def test_unknown_engine_is_refused(llmcourse_exe, tmp_path):
    with pytest.raises(ValueError, match="engine"):
        dedup_corpus(tmp_path / "none.jsonl", tmp_path / "out", DedupConfig(engine="spark"))
    r = subprocess.run([llmcourse_exe, "run", "--engine", "spark", "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "invalid choice: 'spark'" in r.stderr
