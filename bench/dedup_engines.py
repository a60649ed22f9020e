"""Benchmark: chapter 04's dedup engines against datatrove's MinHash pipeline and a datasketch loop.

Four engines remove near duplicates from the same documents at the same Jaccard threshold:

- datatrove: its four MinHash stages (MinhashDedupSignature -> MinhashDedupBuckets ->
  MinhashDedupCluster -> MinhashDedupFilter), each run by its `LocalPipelineExecutor`, reading JSONL
  shards and writing the kept and the removed documents as JSONL. Same bands ("buckets") and rows
  ("hashes per bucket") as ours, 5-gram shingles. `datatrove_config` says what still differs.
- ours, process pool: `llmcourse.dedup.dedup_corpus` on one JSONL file (two streaming passes: signatures in
  `workers` processes, LSH buckets by sorting, verified pairs, union-find, then kept.jsonl and removed.jsonl).
- ours, Ray: the same call with `DedupConfig(engine="ray", partitions=workers)` on a local Ray instance of
  `workers` CPUs. Ray's start-up is timed on its own and left out of the dedup time. Skipped, with a note,
  where DedupConfig has no `engine` field.
- datasketch loop: bench/dedup.py's plain per-document loop (one process, no files read or written).

All engines run in one invocation on the same documents (bench/dedup.py's sample corpus, plus --stdlib N
standard-library modules read at run time). Speed is documents per second over the whole dedup (best of
--repeat runs). Peak memory is that of this process and all its descendants (pool workers, datatrove's
forkserver and its workers, Ray's daemons and workers), sampled every 50 ms: the sum of their PSS
(proportional set size: a page shared by k processes counts 1/k in each), from psutil. Without psutil it is
`resource.getrusage`'s maximum RSS of this process plus that of its largest finished child, over the whole
run (not per engine). Quality is bench/dedup.py's: on the web pages, pair recall and precision against
brute-force Jaccard of our 5-token shingles. Column `=pool`: the Jaccard similarity of the engine's removed
set with our process pool's (1.000: the same documents removed). datatrove's JSONL reader and writer need
`orjson` (`pip install orjson`). Usage (from the repository root):

    python bench/dedup_engines.py [--threshold 0.7] [--workers 2] [--repeat 2] [--stdlib N] [--json f.json]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LLMCOURSE_PROGRESS", "0")  # no progress bars between the table's lines

from dedup import baseline, corpus, quality  # bench/dedup.py: the corpus, the datasketch loop, the quality

from llmcourse.cleaning import words
from llmcourse.dedup import DedupConfig, dedup_corpus, lsh_params
from llmcourse.samples import stdlib_code_documents

NUM_PERM = 128
NGRAM = 5


# -----------------------------------------------------------------------------------------------------
# Peak memory of the process tree


class PeakMemory:
    "Peak memory of this process and its descendants while the block runs, sampled in a thread."

    def __init__(self, interval: float = 0.05):  # seconds between samples
        self.interval = interval
        self.peak = self.before = 0.0  # bytes
        try:
            import psutil

            self.psutil = psutil
            self.measure = "peak PSS of the process tree (psutil, sampled every 50 ms)"
        except ImportError:
            self.psutil = None
            self.measure = "getrusage: max RSS of this process + largest finished child, whole run"

    def tree_bytes(self) -> float:
        "The memory of the tree now: the sum of every process's PSS (RSS where PSS cannot be read)."
        if self.psutil is None:
            own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            return (own + children) * 1024.0  # Linux reports KiB
        me = self.psutil.Process()
        total = 0.0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except (self.psutil.NoSuchProcess, self.psutil.ZombieProcess):
                continue  # it ended between the listing and the read
            except self.psutil.AccessDenied:
                total += p.memory_info().rss
        return total

    def _watch(self):
        while not self.stop.wait(self.interval):
            self.peak = max(self.peak, self.tree_bytes())

    def __enter__(self):
        gc.collect()
        self.before = self.peak = self.tree_bytes()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.tree_bytes())


def measured(run, repeat: int) -> tuple[float, object, PeakMemory]:
    "Best wall time of `repeat` calls of `run(k)` (k: the repeat), the last result, and the peak memory."
    best, out = float("inf"), None
    with PeakMemory() as mem:
        for k in range(repeat):
            t0 = time.perf_counter()
            out = run(k)
            best = min(best, time.perf_counter() - t0)
    return best, out, mem


# -----------------------------------------------------------------------------------------------------
# The documents


def documents(data: Path, stdlib_files: int) -> list[dict]:
    "bench/dedup.py's sample corpus plus `stdlib_files` standard-library modules, empty texts left out."
    docs = corpus(data)
    if stdlib_files:
        code = stdlib_code_documents(max_files=stdlib_files)
        docs += [{"id": d["id"], "text": d["text"], "web": False} for d in code]
    # datatrove's readers skip a document with no text, so it would be neither kept nor removed there
    return [d for d in docs if d["text"].strip()]


def write_jsonl(docs: list[dict], path: Path):
    "Documents as JSONL with id and text, the input every engine reads."
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d["id"], "text": d["text"]}, ensure_ascii=False) + "\n")


def read_jsonl_file(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# -----------------------------------------------------------------------------------------------------
# datatrove


def course_tokenizer():
    "Our `words` (letter/digit runs, each CJK character a token) as a datatrove WordTokenizer."
    from datatrove.utils.word_tokenizers import WordTokenizer

    class CourseWords(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return words(text)

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    return CourseWords()


def datatrove_config(threshold: float):
    """datatrove's MinhashConfig set as close to ours as it allows. What still differs:
    - normalisation: datatrove first runs `simplify_text` (lowercase, every number -> "0", punctuation
      -> space, diacritics removed, whitespace collapsed), ours only lowercases the words.
    - words: datatrove's own word tokenizers for English and Chinese are spaCy's (not installed here, not
      a dependency of the course), so it gets ours through its WordTokenizer interface: both engines cut
      the same words, and the comparison is about the engines (spaCy's speed is not measured here).
    - shingles: datatrove hashes each 5-word string with xxhash, ours combine crc32 word hashes into a
      32-bit shingle hash. A text of fewer than 5 words has no shingle in datatrove (never a duplicate),
      ours makes one shingle of all its words.
    - signatures: datatrove permutes with (a x + b) mod 2^61 - 1 and keeps the low 32 bits (precision 32,
      as our uint32 signatures, where its default is 64), ours use datasketch's 32-bit scheme. Both band
      bands x rows values: datatrove computes only those, ours all 128 permutations.
    - pairs: datatrove keeps every pair that shares a band, ours only pairs whose signatures agree on
      >= threshold of their positions. A cluster keeps, in datatrove, the root of a union by size, in
      ours its earliest document."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    bands, rows = lsh_params(threshold, NUM_PERM)
    hashing = HashConfig(precision=32, hash_fc="xxhash")
    return MinhashConfig(n_grams=NGRAM, num_buckets=bands, hashes_per_bucket=rows, seed=1,
                         hash_config=hashing)


def xxhash32_utf8(shingle: str) -> int:
    "datatrove's 32-bit xxhash of a shingle string, encoded to UTF-8 first as xxhash 3 did."
    import xxhash

    return xxhash.xxh32_intdigest(shingle.encode("utf-8"))


@contextlib.contextmanager
def stderr_to(path: Path):
    "Send this process's stderr (and its new children's) to a file: datatrove logs every task at INFO level."
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def datatrove_dedup(shards: Path, work: Path, threshold: float, workers: int, start_method: str = "fork"
                    ) -> tuple[Path, dict]:
    "datatrove's four MinHash stages over the JSONL shards into `work`: (work, seconds per stage)."
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    cfg = datatrove_config(threshold)
    sigs, dups, remove = work / "signatures", work / "buckets", work / "remove"
    first = MinhashDedupSignature(str(sigs), config=cfg, language=course_tokenizer())
    # datatrove 0.10.1 hands xxhash a str, which xxhash 4 (installed here for `datasets`) refuses: "Strings
    # must be encoded before hashing" (huggingface/datatrove issue #508, its `processing` extra pins
    # xxhash<4). The same hash of the UTF-8 bytes gives the digests xxhash 3 gave.
    first._hash_func = xxhash32_utf8
    signature = [JsonlReader(str(shards)), first]
    buckets = [MinhashDedupBuckets(str(sigs), str(dups), config=cfg)]
    # the cluster ids cost a few bytes per duplicate: they tell which kept document a removed one copies
    cluster = [MinhashDedupCluster(str(dups), str(remove), config=cfg, save_cluster_id=True)]
    removed_writer = JsonlWriter(str(work / "removed"), compression=None)
    keep = [JsonlReader(str(shards)),
            MinhashDedupFilter(str(remove), exclusion_writer=removed_writer, load_cluster_ids=True),
            JsonlWriter(str(work / "kept"), compression=None)]
    # tasks: one per shard for the passes over documents, one per band for the buckets (datatrove needs a
    # multiple of num_buckets), one for the clustering, and at most `workers` at a time.
    stages = [(signature, workers), (buckets, cfg.num_buckets), (cluster, 1), (keep, workers)]
    # start_method: datatrove's default, "forkserver", starts each stage's pool with fresh processes that
    # import this script again (llmcourse, torch: about 1.5 s each). That is the harness's cost, not
    # datatrove's, so the pools fork, as our process pool does. On the sample corpus (2 cores, 2026-12-05),
    # the four stages took 12.6-12.8 s with forkserver and 2.3-2.4 s with fork from this script, and
    # 3.8-4.2 s vs 2.0 s from a script that imports datatrove only.
    work.mkdir(parents=True, exist_ok=True)
    seconds = {}
    with stderr_to(work / "datatrove.log"):
        for name, (pipeline, tasks) in zip(["signature", "buckets", "cluster", "filter"], stages):
            t0 = time.perf_counter()
            logs = str(work / f"logs_{name}")
            executor = LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks),
                                             logging_dir=logs, start_method=start_method)
            executor.run()
            seconds[name] = round(time.perf_counter() - t0, 2)
    return work, seconds


def datatrove_step_seconds(work: Path) -> dict[str, float]:
    "The time datatrove's steps themselves report (summed over tasks), by stage: the rest is start-up."
    out = {}
    for stats_file in sorted(work.glob("logs_*/stats.json")):
        stage = stats_file.parent.name.removeprefix("logs_")
        steps = json.loads(stats_file.read_text())
        out[stage] = round(sum(st.get("time_stats", {}).get("total", 0.0) for st in steps), 2)
    return out


def datatrove_removals(work: Path) -> dict[str, str]:
    "Removed id -> kept id, from the cluster id datatrove's filter put in each document's metadata."
    kept = [d for p in sorted((work / "kept").glob("*.jsonl")) for d in read_jsonl_file(p)]
    removed = [d for p in sorted((work / "removed").glob("*.jsonl")) for d in read_jsonl_file(p)]
    keeper = {}
    for d in kept:
        cid = d["metadata"].get("minhash_cluster_id", -1)
        if cid != -1:
            if cid in keeper:
                raise RuntimeError(f"datatrove kept two of cluster {cid}: {keeper[cid]}, {d['id']}")
            keeper[cid] = d["id"]
    return {d["id"]: keeper[d["metadata"]["minhash_cluster_id"]] for d in removed}


def write_shards(docs: list[dict], folder: Path, n: int):
    """The documents dealt round-robin into n JSONL files: datatrove gives each task whole files, and the
    standard-library modules (long ones, at the end of the list) must not all land in the last file."""
    for k in range(n):
        write_jsonl(docs[k::n], folder / f"{k:05d}.jsonl")


# -----------------------------------------------------------------------------------------------------
# Ours


def has_engine_field() -> bool:
    return "engine" in {f.name for f in dataclasses.fields(DedupConfig)}


def ours_dedup(path: Path, out: Path, threshold: float, workers: int, engine: str | None
               ) -> tuple[Path, dict]:
    "`dedup_corpus` on the JSONL file into `out`: (out, seconds of its passes)."
    # on Ray: one byte range and one shuffle partition per CPU (the pipeline's choice too)
    extra = {"engine": engine, "partitions": workers} if engine else {}
    cfg = DedupConfig(threshold=threshold, workers=workers, **extra)
    stats = dedup_corpus(path, out, cfg, [], remove_domains=None)
    return out, {k.removeprefix("seconds_"): v for k, v in stats.items() if k.startswith("seconds_")}


def ours_removals(out: Path) -> dict[str, str]:
    "Removed id -> the id kept in its place, from removed.jsonl."
    return {r["id"]: r["duplicate_of"] for r in read_jsonl_file(out / "removed.jsonl") if "duplicate_of" in r}


# -----------------------------------------------------------------------------------------------------
# The run


def same_removed(a: dict, b: dict) -> float:
    "Jaccard similarity of two removed sets (1.0: the same documents removed)."
    union = set(a) | set(b)
    return len(set(a) & set(b)) / len(union) if union else 1.0


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.machine()} ({cpu}), {os.cpu_count()} cores, Python {platform.python_version()}"


LABELS = {"loop": "datasketch loop", "pool": "ours: process pool", "datatrove": "datatrove",
          "ray": "ours: Ray"}


def run_engines(docs: list[dict], threshold: float, workers: int, repeat: int, result: dict) -> dict:
    "Every engine on the same documents: engine -> (workers, best seconds, removals, memory, details)."
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-dedup-engines-") as tmp:
        tmp = Path(tmp)
        corpus_file, shards = tmp / "corpus.jsonl", tmp / "shards"
        write_jsonl(docs, corpus_file)
        write_shards(docs, shards, workers)

        def fresh(name: str, k: int) -> Path:  # an empty folder per engine and repeat
            folder = tmp / f"{name}_{k}"
            shutil.rmtree(folder, ignore_errors=True)
            return folder

        # each returns (its removals, or the folder they were written to, and details of the last run)
        engines = {
            "loop": lambda k: (baseline(docs, threshold), {}),
            "pool": lambda k: ours_dedup(corpus_file, fresh("pool", k), threshold, workers, None),
            "datatrove": lambda k: datatrove_dedup(shards, fresh("datatrove", k), threshold, workers),
        }
        if has_engine_field():
            engines["ray"] = lambda k: ours_dedup(corpus_file, fresh("ray", k), threshold, workers, "ray")
        else:
            print("skipped ours: Ray: this llmcourse's DedupConfig has no `engine` field yet")
            result["ray_skipped"] = "DedupConfig has no engine field"
        for name, run in engines.items():
            if name == "ray":
                ray_up = start_ray_timed(workers)
                result["ray_startup_s"] = ray_up  # not part of the Ray row's time
            try:
                t, (found, details), mem = measured(run, repeat)
            finally:
                if name == "ray":
                    import ray

                    ray.shutdown()
            # the removals are read back from the engine's files after the clock stops
            if name == "datatrove":
                removed = datatrove_removals(found)
                details = {"stage wall s": details, "steps' own s": datatrove_step_seconds(found)}
            else:
                removed = found if name == "loop" else ours_removals(found)
            runs[name] = (1 if name == "loop" else workers, t, removed, mem, details)
    return runs


def start_ray_timed(workers: int) -> float:
    "Start a local Ray instance of `workers` CPUs, and return the seconds it took."
    from llmcourse.core import start_ray

    t0 = time.perf_counter()
    start_ray(num_cpus=workers)
    return time.perf_counter() - t0


def report(runs: dict, docs: list[dict], web: list[dict], threshold: float, result: dict):
    "Print the table and the ratios, and add them to `result`."
    pool, mib = runs["pool"][2], 2.0**20
    print(f"{'engine':20} {'workers':>7} {'seconds':>8} {'docs/s':>8} {'peak MiB':>9} {'+MiB':>6} "
          f"{'removed':>8} {'=pool':>6} {'precision':>9} {'recall':>7}")
    by = {}
    for name, (cores, t, dup, mem, details) in runs.items():
        p, r = quality(dup, web, threshold)
        rate = len(docs) / t
        by[name] = row = {"engine": LABELS[name], "workers": cores, "seconds": t, "docs_per_s": rate,
                          "peak_mib": mem.peak / mib, "peak_rise_mib": (mem.peak - mem.before) / mib,
                          "removed": len(dup), "removed_jaccard_vs_pool": same_removed(dup, pool),
                          "precision": p, "recall": r, "details": details}
        same = row["removed_jaccard_vs_pool"]
        print(f"{LABELS[name]:20} {cores:7d} {t:8.2f} {rate:8.0f} {row['peak_mib']:9.0f} "
              f"{row['peak_rise_mib']:6.0f} {len(dup):8d} {same:6.3f} {p:9.3f} {r:7.3f}")
    result["table"] = list(by.values())
    result["memory_measure"] = runs["pool"][3].measure
    ratios = {}
    for a, b in [("pool", "loop"), ("pool", "datatrove"), ("ray", "datatrove"), ("ray", "pool")]:
        if a in by and b in by:
            ratios[f"docs/s {a} / {b}"] = by[a]["docs_per_s"] / by[b]["docs_per_s"]
            ratios[f"recall points {a} - {b}"] = 100 * (by[a]["recall"] - by[b]["recall"])
    result["ratios"] = ratios
    for name, row in by.items():
        if row["details"]:
            print(f"{row['engine']}, last run: {row['details']}")
    if "ray" in by:
        print(f"Ray start-up (not in the Ray row): {result['ray_startup_s']:.1f} s")
    print(f"memory: {result['memory_measure']}. +MiB: its rise over the tree before the engine ran")
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data_samples")
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--stdlib", type=int, default=0, help="add this many standard-library modules")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    docs = documents(Path(a.data), a.stdlib)
    web = [d for d in docs if d["web"]]
    bands, rows = lsh_params(a.threshold, NUM_PERM)  # cached: no engine pays for the (b, r) search
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    result = {"machine": machine(), "date": now, "docs": len(docs), "web_docs": len(web),
              "stdlib_files": a.stdlib, "threshold": a.threshold, "bands": bands, "rows": rows,
              "workers": a.workers, "repeat": a.repeat}
    print(f"{len(docs):,} documents ({len(web):,} web pages for quality), threshold {a.threshold}, "
          f"{bands} bands x {rows} rows, {a.workers} worker(s), best of {a.repeat}, {result['machine']}")
    load_before = os.getloadavg()[0]  # the machine may be shared: a busy one slows every engine unevenly
    runs = run_engines(docs, a.threshold, a.workers, a.repeat, result)
    result["load_average_1min"] = [load_before, os.getloadavg()[0]]
    report(runs, docs, web, a.threshold, result)
    print(f"1-minute load average before and after the runs: {load_before:.1f}, {os.getloadavg()[0]:.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
