"""Benchmark: our pure-Python byte-level BPE against 🤗 tokenizers and tiktoken, in one run.

What it measures, on the same text and the same vocabulary:

1. Training time. `llmcourse.tokenizer.train_bpe` against 🤗 tokenizers' BPE trainer
   (`train_hf_tokenizer(..., "bpe", ...)`) on the training split of `tokenizer_corpus(--data)`, at
   `--vocab-size` with the special token "<|endoftext|>". The library is timed twice: with its default
   thread pool and with TOKENIZERS_PARALLELISM=false. Both merge lists are compared, in order.
2. Encoding throughput (bytes of UTF-8 per second) on about `--mb` MB of documents drawn from the whole
   corpus (shuffled with a fixed seed; repeated only if the corpus is smaller than that):
   - ours, `Tokenizer.encode`, one thread: a first pass with an empty BPE cache, then a warm second pass;
   - 🤗 tokenizers with our vocabulary (`Tokenizer.to_hf()`): `encode_batch` with its thread pool,
     `encode_batch` with TOKENIZERS_PARALLELISM=false, `encode_batch_fast` (no character offsets) where
     the version has it, and a one-document-at-a-time `encode` loop;
   - tiktoken, an `Encoding` built from our vocabulary (rank = our id): an `encode_ordinary` loop and
     `encode_ordinary_batch` (a Python thread pool).
   Library rows are the best of `--repeat` passes. "cpu/wall" is process CPU time over wall time and
   "threads" counts the threads busy for at least a tenth of the wall time (from /proc, Linux only): they
   show whether a thread pool really ran in parallel. On a machine shared with other work it may not.
3. Agreement: every encoder's ids are compared with ours on the benchmark text, and 🤗 tokenizers' and
   tiktoken's on every corpus document; 🤗 tokenizers must agree exactly (asserted, after the JSON is
   written), tiktoken's differing documents are counted and the first one shown.

Absolute numbers depend on the machine and its load; the point is the ratios, all measured in the same
run on the same text. Usage (from the repository root):

    python bench/tokenizer.py [--data data_samples] [--vocab-size 8192] [--mb 4] [--repeat 3] [--json out.json]
"""
from __future__ import annotations

import argparse, json, os, platform, random, sys, time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tiktoken, tokenizers

from llmcourse.tokenizer import BASE_BYTES, Tokenizer, hf_merges, tokenizer_corpus, train_bpe, train_hf_tokenizer

EOT = "<|endoftext|>"
Encoder = Callable[[list[str]], list[list[int]]]  # documents -> token ids per document


@dataclass
class Timing:
    wall_s: float         # elapsed seconds
    cpu_s: float          # CPU seconds of the whole process (all threads)
    threads: int | None   # threads that were busy for at least a tenth of the wall time (None: no /proc)

    @property
    def cpu_per_wall(self) -> float: return self.cpu_s / max(self.wall_s, 1e-12)


def thread_cpu_seconds() -> dict[str, float]:
    "CPU seconds used so far by each thread of this process (Linux /proc; empty elsewhere)."
    tasks, out = Path("/proc/self/task"), {}
    if not tasks.is_dir(): return out
    tick = os.sysconf("SC_CLK_TCK")
    for task in tasks.iterdir():
        try: fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError: continue  # the thread ended meanwhile
        out[task.name] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def busy_threads(before: dict[str, float], after: dict[str, float], wall_s: float) -> int | None:
    "How many threads worked for at least a tenth of `wall_s` between two snapshots."
    if not after: return None
    return sum(cpu - before.get(tid, 0.0) >= 0.1 * wall_s for tid, cpu in after.items())


def timed(fn: Callable[[], Any]) -> tuple[Any, Timing]:
    "Run `fn` once; its result and how long it took (wall, CPU, busy threads)."
    per_thread, wall, cpu = thread_cpu_seconds(), time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return out, Timing(wall, cpu, busy_threads(per_thread, thread_cpu_seconds(), wall))


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[Any, Timing]:
    "Run `fn` `repeat` times; the last result and the fastest timing (by wall time)."
    runs = [timed(fn) for _ in range(max(repeat, 1))]
    return runs[-1][0], min((t for _, t in runs), key=lambda t: t.wall_s)


@contextmanager
def hf_parallelism(enabled: bool) -> Iterator[None]:
    "Switch 🤗 tokenizers' thread pool on or off (TOKENIZERS_PARALLELISM) for the duration."
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if enabled else "false"
    try: yield
    finally:
        if old is None: del os.environ["TOKENIZERS_PARALLELISM"]
        else: os.environ["TOKENIZERS_PARALLELISM"] = old


def machine_info() -> dict[str, Any]:
    "Where this ran, and with which library versions."
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "load_average_1min_at_start": os.getloadavg()[0], "python": platform.python_version(),
            "tokenizers": tokenizers.__version__, "tiktoken": tiktoken.__version__}


# ---------------------------------------------------------------- training

def first_difference(ours: list, theirs: list) -> int | None:
    "The first index where two sequences differ (None when equal)."
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b: return i
    return None if len(ours) == len(theirs) else min(len(ours), len(theirs))


def bench_training(texts: list[str], vocab_size: int) -> tuple[Tokenizer, dict[str, Any]]:
    "Train ours and the library's BPE on the same texts; our tokenizer and the timings and merge check."
    (vocab, merges), ours = timed(lambda: train_bpe(texts, vocab_size, [EOT]))
    hf, lib = timed(lambda: train_hf_tokenizer(texts, "bpe", vocab_size, [EOT]))
    with hf_parallelism(False):
        _, lib_1t = timed(lambda: train_hf_tokenizer(texts, "bpe", vocab_size, [EOT]))
    theirs = hf_merges(hf)
    diff = first_difference(merges, theirs)
    result = {"train_docs": len(texts), "train_bytes": sum(len(t.encode("utf-8")) for t in texts),
              "ours": asdict(ours), "hf": asdict(lib), "hf_single_thread": asdict(lib_1t),
              "ratio_ours_over_hf": ours.wall_s / lib.wall_s, "ratio_ours_over_hf_single_thread": ours.wall_s / lib_1t.wall_s,
              "merges_ours": len(merges), "merges_hf": len(theirs), "merges_agree": diff is None, "first_merge_difference": diff}
    if diff is not None:
        result["merge_example"] = {"ours": repr(merges[diff]) if diff < len(merges) else None,
                                   "hf": repr(theirs[diff]) if diff < len(theirs) else None}
    return Tokenizer(vocab, merges, [EOT]), result


def print_training(r: dict[str, Any]) -> None:
    print(f"\n== Training: {r['train_docs']:,} documents, {r['train_bytes'] / 1e6:.2f} MB ==")
    rows = [("ours (train_bpe, 1 thread)", r["ours"]), ("🤗 tokenizers (default threads)", r["hf"]),
            ("🤗 tokenizers (TOKENIZERS_PARALLELISM=false)", r["hf_single_thread"])]
    for name, t in rows:
        print(f"  {name:<46} {t['wall_s']:8.2f} s   cpu/wall {t['cpu_s'] / max(t['wall_s'], 1e-12):4.2f}   busy threads {t['threads']}")
    print(f"  ratio ours / 🤗: {r['ratio_ours_over_hf']:.1f}x (default threads), {r['ratio_ours_over_hf_single_thread']:.1f}x (single thread)")
    if r["merges_agree"]: print(f"  merges agree: all {r['merges_ours']:,} identical, in the same order")
    else: print(f"  merges DIFFER: ours {r['merges_ours']:,}, 🤗 {r['merges_hf']:,}; first difference at {r['first_merge_difference']}: {r['merge_example']}")


# ---------------------------------------------------------------- encoding

def benchmark_texts(docs: list[dict], target_bytes: int, seed: int = 0) -> tuple[list[str], bool]:
    "Whole documents, shuffled with a fixed seed, until `target_bytes`; and whether the corpus had to repeat."
    pool = [d["text"] for d in docs if EOT not in d["text"]]  # the library would parse the special token, ours would not
    random.Random(seed).shuffle(pool)
    if not pool: raise ValueError("no documents to encode")
    texts, size, passes = [], 0, 0
    while size < target_bytes:
        passes += 1
        for t in pool:
            if size >= target_bytes: break
            texts.append(t); size += len(t.encode("utf-8"))
    return texts, passes > 1


def tiktoken_encoding(tok: Tokenizer) -> tiktoken.Encoding:
    "A tiktoken Encoding with our vocabulary: rank = our id (bytes 0..255 in our order, then merge results)."
    ranks = {bytes([BASE_BYTES[i]]): i for i in range(256)}
    for k, (a, b) in enumerate(tok.merges):
        if a + b in ranks: raise ValueError(f"merge {k} makes {a + b!r}, which an earlier token already spells")
        if tok.token_id[a + b] != 256 + k: raise ValueError(f"merge {k} has id {tok.token_id[a + b]}, not {256 + k}: tiktoken ids would not be ours")
        ranks[a + b] = 256 + k
    return tiktoken.Encoding(name="llmcourse", pat_str=tok.pattern, mergeable_ranks=ranks, special_tokens={})


def our_encoder(tok: Tokenizer) -> Encoder: return lambda texts: [tok.encode(t) for t in texts]
def hf_batch_encoder(hf: tokenizers.Tokenizer) -> Encoder: return lambda texts: [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
def hf_fast_batch_encoder(hf: tokenizers.Tokenizer) -> Encoder: return lambda texts: [e.ids for e in hf.encode_batch_fast(texts, add_special_tokens=False)]
def hf_loop_encoder(hf: tokenizers.Tokenizer) -> Encoder: return lambda texts: [hf.encode(t, add_special_tokens=False).ids for t in texts]
def tiktoken_loop_encoder(enc: tiktoken.Encoding) -> Encoder: return lambda texts: [enc.encode_ordinary(t) for t in texts]
def tiktoken_batch_encoder(enc: tiktoken.Encoding) -> Encoder: return lambda texts: enc.encode_ordinary_batch(texts)


def count_mismatches(ours: list[list[int]], theirs: list[list[int]]) -> tuple[int, int | None]:
    "How many documents encode differently, and the index of the first one (None if none)."
    bad = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    return len(bad), (bad[0] if bad else None)


def describe_mismatch(tok: Tokenizer, text: str, ours: list[int], theirs: list[int]) -> dict[str, Any]:
    "Where two encodings of one text part ways, with the tokens around that point."
    i = first_difference(ours, theirs) or 0
    show = lambda ids: [tok.vocab[t].decode("utf-8", "replace") for t in ids[max(i - 2, 0): i + 4]]
    return {"token_index": i, "ours": show(ours), "theirs": show(theirs),
            "ours_ids": ours[max(i - 2, 0): i + 4], "theirs_ids": theirs[max(i - 2, 0): i + 4], "text_length": len(text)}


def throughput_row(name: str, t: Timing, n_bytes: int, n_tokens: int) -> dict[str, Any]:
    return {"tokenizer": name, **asdict(t), "bytes_per_s": n_bytes / t.wall_s, "tokens": n_tokens, "cpu_per_wall": t.cpu_per_wall}


def bench_encoding(tok: Tokenizer, texts: list[str], repeat: int) -> dict[str, Any]:
    "Throughput of every encoder on the same documents, and whether their ids agree with ours."
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    hf, enc = tok.to_hf(), tiktoken_encoding(tok)
    tok._cache.clear()
    ours, cold = timed(lambda: our_encoder(tok)(texts))
    _, warm = timed(lambda: our_encoder(tok)(texts))
    n_tokens = sum(map(len, ours))
    rows = [throughput_row("ours encode (1 thread, cold cache)", cold, n_bytes, n_tokens),
            throughput_row("ours encode (1 thread, warm cache)", warm, n_bytes, n_tokens)]
    library: list[tuple[str, Encoder, bool]] = [
        ("🤗 encode_batch (thread pool)", hf_batch_encoder(hf), True),
        ("🤗 encode_batch (PARALLELISM=false)", hf_batch_encoder(hf), False),
        *([("🤗 encode_batch_fast (thread pool, no offsets)", hf_fast_batch_encoder(hf), True)] if hasattr(hf, "encode_batch_fast") else []),
        ("🤗 encode loop (1 thread)", hf_loop_encoder(hf), True),
        ("tiktoken encode_ordinary loop (1 thread)", tiktoken_loop_encoder(enc), True),
        ("tiktoken encode_ordinary_batch (8 threads)", tiktoken_batch_encoder(enc), True)]
    checks = {}
    for name, encoder, parallel in library:
        with hf_parallelism(parallel):
            ids, t = best_of(lambda: encoder(texts), repeat)
        rows.append(throughput_row(name, t, n_bytes, sum(map(len, ids))))
        checks[name] = count_mismatches(ours, ids)[0]
    for r in rows: r["ratio_vs_ours_cold"] = r["bytes_per_s"] / rows[0]["bytes_per_s"]
    return {"docs": len(texts), "bytes": n_bytes, "tokens": n_tokens, "bytes_per_token": n_bytes / n_tokens,
            "repeat": repeat, "rows": rows, "mismatched_docs_vs_ours": checks}


def print_encoding(r: dict[str, Any], repeated: bool) -> None:
    note = " (the corpus repeats: the cold pass is partly warm)" if repeated else ""
    print(f"\n== Encoding: {r['docs']:,} documents, {r['bytes'] / 1e6:.2f} MB, {r['tokens']:,} tokens "
          f"({r['bytes_per_token']:.2f} bytes/token){note} ==")
    print(f"  library rows: best of {r['repeat']} passes; ratio = throughput / ours (cold)")
    print(f"  {'tokenizer':<48} {'MB/s':>9} {'ratio':>9} {'cpu/wall':>9} {'threads':>8} {'docs != ours':>13}")
    for row in r["rows"]:
        diff = r["mismatched_docs_vs_ours"].get(row["tokenizer"], 0)
        print(f"  {row['tokenizer']:<48} {row['bytes_per_s'] / 1e6:9.2f} {row['ratio_vs_ours_cold']:8.1f}x "
              f"{row['cpu_per_wall']:9.2f} {row['threads'] if row['threads'] is not None else '?':>8} {diff:13,}")


def check_all_documents(tok: Tokenizer, docs: list[dict]) -> dict[str, Any]:
    "Ours against 🤗 tokenizers and tiktoken on every corpus document (held-out and training)."
    texts = [d["text"] for d in docs if EOT not in d["text"]]
    ours = our_encoder(tok)(texts)
    with hf_parallelism(True): hf_ids = hf_batch_encoder(tok.to_hf())(texts)
    tt_ids = tiktoken_batch_encoder(tiktoken_encoding(tok))(texts)
    n_hf, _ = count_mismatches(ours, hf_ids)
    n_tt, first = count_mismatches(ours, tt_ids)
    out: dict[str, Any] = {"docs": len(texts), "hf_mismatched_docs": n_hf, "tiktoken_mismatched_docs": n_tt}
    if first is not None:
        doc = [d for d in docs if EOT not in d["text"]][first]
        out["tiktoken_example"] = {"doc_id": doc["id"], "group": doc["group"], **describe_mismatch(tok, texts[first], ours[first], tt_ids[first])}
    return out


def print_checks(r: dict[str, Any]) -> None:
    print(f"\n== Agreement on all {r['docs']:,} corpus documents ==")
    print(f"  🤗 tokenizers vs ours: {r['hf_mismatched_docs']} documents differ")
    print(f"  tiktoken vs ours:      {r['tiktoken_mismatched_docs']} documents differ")
    if ex := r.get("tiktoken_example"):
        print(f"  first: {ex['doc_id']} ({ex['group']}) at token {ex['token_index']}: ours {ex['ours']} {ex['ours_ids']}"
              f" · tiktoken {ex['theirs']} {ex['theirs_ids']}")


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data_samples", help="sample folder for tokenizer_corpus")
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size, special token included")
    p.add_argument("--mb", type=float, default=4.0, help="megabytes of text to encode")
    p.add_argument("--repeat", type=int, default=3, help="passes per library encoder (the best counts)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    info = machine_info()
    print(f"machine: {info['processor']}, {info['cpu_count']} CPUs, {info['platform']}, Python {info['python']}")
    print(f"load average (1 min) before starting: {info['load_average_1min_at_start']:.2f}"
          + ("  <- other work is running: thread-pool numbers will be pessimistic" if info["load_average_1min_at_start"] > 0.5 else ""))
    print(f"libraries: tokenizers {info['tokenizers']}, tiktoken {info['tiktoken']}")
    docs = tokenizer_corpus(args.data)
    tok, training = bench_training([d["text"] for d in docs if not d["heldout"]], args.vocab_size)
    print_training(training)
    texts, repeated = benchmark_texts(docs, int(args.mb * 1e6))
    encoding = bench_encoding(tok, texts, args.repeat)
    print_encoding(encoding, repeated)
    checks = check_all_documents(tok, docs)
    print_checks(checks)
    results = {"machine": info, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "training": training, "encoding": {**encoding, "corpus_repeated": repeated}, "all_documents": checks}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False))
        print(f"\nwrote {args.json}")
    hf_bad = encoding["mismatched_docs_vs_ours"]["🤗 encode_batch (thread pool)"]
    assert hf_bad == 0 and checks["hf_mismatched_docs"] == 0, f"🤗 tokenizers and ours disagree on {hf_bad} benchmark documents"
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
