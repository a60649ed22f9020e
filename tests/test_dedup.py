"Chapter 04's dedup stage on a constructed corpus with known answers, with signatures in worker processes."
import json, subprocess, sys

import numpy as np

from llmcourse.core import read_jsonl
from llmcourse.dedup import (DedupConfig, band_candidate_pairs, band_keys, bucket_pairs, dedup_corpus,
                             exact_duplicates, jaccard, lsh_params, minhash, minhash_signatures, near_duplicates,
                             near_duplicates_by_sorting, near_duplicates_partitioned, shingle_hashes, unique_ids)

BASE = ("The harbour committee met on Tuesday to discuss the new ferry timetable and the repairs to the old pier, "
        "which have been delayed twice since the storm in the spring. Residents asked for more evening crossings, "
        "and the committee promised an answer before the summer season begins in earnest next month.")
OTHER = ("A short guide to keeping sourdough starter alive through a cold winter kitchen: feed it twice a day, keep "
         "the jar away from the window, and do not worry when it smells sharp after a long weekend away from home.")
THIRD = ("Our volunteers counted forty-one species of birds along the river path this year, including a pair of "
         "kingfishers that nested under the footbridge and a heron that seemed entirely unbothered by the joggers.")


def _write(path, docs):
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")


def test_stage_on_constructed_corpus(tmp_path):
    docs = [
        {"id": "a", "text": BASE, "domain": "web"},
        {"id": "b", "text": BASE.replace("Tuesday", "Wednesday"), "domain": "web"},          # near copy of a
        {"id": "c", "text": OTHER, "domain": "web"},
        {"id": "d", "text": "  " + OTHER.upper() + " ", "domain": "web"},                       # exact copy of c (case, spaces)
        {"id": "e", "text": THIRD, "domain": "knowledge"},
        {"id": "f", "text": THIRD + " Quiz: What is 84 - 18? (1) 56 (2) 66", "domain": "web"},  # holds an eval item
        {"id": "g", "text": "What is 84 - 18? It is 66, as every pupil knows.", "domain": "knowledge"},  # flagged, kept
        {"id": "h", "text": "???", "domain": "web"},                                            # no shingles: never a duplicate
        {"id": "i", "text": "!!!", "domain": "web"},
    ]
    _write(tmp_path / "in.jsonl", docs)
    with open(tmp_path / "in.jsonl", "ab") as f: f.write(b"{broken\n")
    _write(tmp_path / "eval.jsonl", [{"id": "q1", "text": "What is 84 - 18?", "choices": ["56", "66"], "answer": 1},
                                    {"id": "q2", "text": "Which bird nests under bridges?", "choices": ["heron", "kingfisher"], "answer": 1}])
    st = dedup_corpus(tmp_path / "in.jsonl", tmp_path / "out", DedupConfig(threshold=0.7, workers=2, partitions=3), [tmp_path / "eval.jsonl"])
    kept = {json.loads(l)["id"]: json.loads(l) for l in (tmp_path / "out" / "kept.jsonl").read_text().splitlines()}
    removed = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "removed.jsonl").read_text().splitlines())}
    assert set(kept) == {"a", "c", "e", "g", "h", "i"}
    assert removed["b"]["reason"] == "near_duplicate" and removed["b"]["duplicate_of"] == "a"
    assert removed["d"]["reason"] == "exact_duplicate" and removed["d"]["duplicate_of"] == "c"
    assert removed["f"]["reason"] == "contamination" and removed["f"]["eval_ids"] == ["q1"]
    assert removed[None]["reason"] == "unreadable" and "invalid JSON" in removed[None]["detail"]["reason"]
    assert kept["g"]["contamination"] == ["q1"]
    assert st["read"] == 10 and st["kept"] + st["removed"] == 10
    hits = [json.loads(l) for l in (tmp_path / "out" / "contamination.jsonl").read_text().splitlines()]
    assert sorted((h["doc_id"], h["action"]) for h in hits) == [("f", "removed"), ("g", "flagged")]


def test_partitioned_equals_single_process_with_workers():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(300)]
    base = [" ".join(rng.choice(vocab, 80)) for _ in range(60)]
    docs = []
    for i, t in enumerate(base):
        docs.append({"id": f"o{i}", "text": t})
        if i % 3 == 0:  # a light edit of every third document
            w = t.split(); w[40] = "changed"; docs.append({"id": f"c{i}", "text": " ".join(w)})
    single = near_duplicates([d["id"] for d in docs], [d["text"] for d in docs], 0.7)
    for workers, parts in [(1, 1), (2, 5), (2, 17)]:
        assert near_duplicates_partitioned(docs, DedupConfig(threshold=0.7, workers=workers, partitions=parts))[0] == single
    assert {k: v for k, v in single.items()} == {f"c{i}": f"o{i}" for i in range(0, 60, 3)}


def test_block_signatures_equal_datasketch():
    texts = ["alpha beta gamma delta epsilon zeta eta theta", "一二三四五六七八九十", "", "x"]
    sigs = minhash_signatures(texts, block=3)
    for t, s in zip(texts, sigs):
        h = shingle_hashes(t)
        assert (s == minhash(h).hashvalues).all() if len(h) else (s == np.iinfo(np.uint32).max).all()


def test_higher_threshold_removes_fewer():
    "A Jaccard threshold is a similarity: raising it can only shrink what is removed."
    rng = np.random.default_rng(1)
    vocab = [f"w{i}" for i in range(500)]
    docs, true_j = [], {}
    for i in range(40):
        words = list(rng.choice(vocab, 120))
        docs.append({"id": f"o{i}", "text": " ".join(words)})
        edited = list(words)
        for pos in rng.choice(120, [1, 3, 6, 12][i % 4], replace=False):  # 1 to 12 of 120 words replaced
            edited[pos] = f"new{i}_{pos}"
        docs.append({"id": f"c{i}", "text": " ".join(edited)})
        true_j[f"c{i}"] = jaccard(shingle_hashes(docs[-2]["text"]), shingle_hashes(docs[-1]["text"]))
    ids, texts = [d["id"] for d in docs], [d["text"] for d in docs]
    removed = {t: set(near_duplicates(ids, texts, t)) for t in (0.3, 0.5, 0.7, 0.9)}
    for lo, hi in ((0.3, 0.5), (0.5, 0.7), (0.7, 0.9)):
        assert removed[hi] <= removed[lo], (lo, hi)
    assert len(removed[0.9]) < len(removed[0.3])
    for t, gone in removed.items():  # clear cases on either side of the threshold
        assert {c for c, j in true_j.items() if j >= t + 0.15} <= gone, t
        assert not {c for c, j in true_j.items() if j <= t - 0.15} & gone, t


# --- the streaming stage: the same answers as the in-memory references, and memory that does not grow with text --

def _planted_lines(seed=0, n=400):
    "JSONL lines: new documents, exact and near copies, repeated ids, an unreadable line; three kinds of provenance."
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(400)]
    docs = []
    for i in range(n):
        r, where = rng.random(), [{"source": "s", "file": "raw/a.jsonl", "line": 10 + i}, {"_file": "b", "_line": i}, {}][i % 3]
        if i > 20 and r < 0.1:      # an exact copy (case and spacing differ) under its own id
            text = "  " + docs[rng.integers(len(docs))]["text"].upper()
        elif i > 20 and r < 0.3:    # a near copy: two words of an earlier document replaced
            w = docs[rng.integers(len(docs))]["text"].split()
            w[5], w[60] = "changed", "again"
            text = " ".join(w)
        else:
            text = " ".join(rng.choice(vocab, int(rng.integers(80, 150))))
        docs.append({"id": f"d{i}", "text": text, "domain": ["web", "code"][i % 2], **where})
    docs[7]["text"] = "???"  # no shingles: never a near duplicate
    big = " ".join(rng.choice(vocab, 120))  # a bucket of many near copies
    docs += [{"id": f"big{k}", "text": f"{big} tail{k}", "domain": "code"} for k in range(12)]
    lines = [json.dumps(d) + "\n" for d in docs]
    for k in (30, 90, 200):  # later documents under an id already read
        lines.insert(k + 50, json.dumps({"id": f"d{k}", "text": f"another text under d{k}", "domain": "web", "file": "f", "line": 1}) + "\n")
    lines.insert(100, "{broken\n")
    return docs, "".join(lines)


def test_sorted_bands_equal_the_references():
    docs, _ = _planted_lines()
    ids, texts = [d["id"] for d in docs], [d["text"] for d in docs]
    sigs = minhash_signatures(texts)
    bands, rows = lsh_params(0.7)
    order = {i: k for k, i in enumerate(ids)}
    cand = {(ids[a], ids[b]) for a, b in band_candidate_pairs(sigs, bands, rows)}
    assert cand == bucket_pairs(band_keys(ids, sigs, bands, rows), order) and len(cand) > 66   # the big bucket: all pairs
    dup_of, info = near_duplicates_by_sorting(ids, sigs, 0.7)
    assert dup_of == near_duplicates_partitioned(docs, DedupConfig(threshold=0.7, workers=1, partitions=5))[0]
    assert dup_of == near_duplicates(ids, texts, 0.7) and info["candidates"] == len(cand)
    assert {f"big{k}" for k in range(1, 12)} <= set(dup_of) and "d7" not in dup_of


def test_stage_equals_in_memory_reference(tmp_path):
    docs, text = _planted_lines()
    (tmp_path / "in.jsonl").write_text(text, encoding="utf-8")
    st = dedup_corpus(tmp_path / "in.jsonl", tmp_path / "out", DedupConfig(workers=2, chunk_docs=7))
    # the reference: the steps in memory, with the chapter's functions (no evaluation sets here)
    unique, repeats = unique_ids(read_jsonl(tmp_path / "in.jsonl", on_error="skip", rejects=[], with_lines=True))
    exact = exact_duplicates(unique)
    rest = [d for d in unique if d["id"] not in exact]
    near = near_duplicates_partitioned(rest, DedupConfig(workers=1))[0]
    want = {i: ("exact_duplicate", near.get(o, o)) for i, o in exact.items()} | {i: ("near_duplicate", o) for i, o in near.items()}
    out = tmp_path / "out"
    kept = [json.loads(l) for l in (out / "kept.jsonl").read_text().splitlines()]
    removed = [json.loads(l) for l in (out / "removed.jsonl").read_text().splitlines()]
    assert [d["id"] for d in kept] == [d["id"] for d in unique if d["id"] not in want]
    assert kept == [d for d in unique if d["id"] not in want]   # whole documents, in input order
    dups = [r for r in removed if r["reason"].endswith("_duplicate")]
    assert {r["id"]: (r["reason"], r["duplicate_of"]) for r in dups} == want and len(dups) == len(want)
    assert [r["id"] for r in dups] == [d["id"] for d in unique if d["id"] in want]
    assert [r for r in removed if r["reason"] == "duplicate_id"] == repeats
    seen, later = set(), []   # the lines of documents whose id an earlier line already had
    for n, line in enumerate(text.splitlines(), 1):
        i = json.loads(line)["id"] if line.startswith("{\"") else None
        later += [n] if i in seen else []
        seen.add(i)
    assert [r["input_line"] for r in repeats] == later
    assert removed[-1]["reason"] == "unreadable" and removed[-1]["detail"]["line"] == 101
    assert st["read"] == len(text.splitlines()) == st["kept"] + st["removed"] == len(kept) + len(removed)
    assert st["by_reason"] == {"exact_duplicate": len(exact), "near_duplicate": len(near), "duplicate_id": 3, "unreadable": 1}
    first = {d["id"]: d for d in unique}
    for r in dups:  # provenance: copied from the document (older files: _file, _line)
        d = first[r["id"]]
        where = {"source": d.get("source"), "file": d.get("file", d.get("_file")), "line": d.get("line", d.get("_line"))}
        assert {k: r.get(k) for k in where} == where
    assert [r["file"] for r in removed if r["reason"] == "duplicate_id"] == ["f"] * 3
    assert sorted(p.name for p in out.iterdir()) == ["contamination.jsonl", "dedup_stats.json", "kept.jsonl", "removed.jsonl"]
    dedup_corpus(tmp_path / "in.jsonl", tmp_path / "one", DedupConfig(workers=1, chunk_docs=1000))
    for f in ("kept.jsonl", "removed.jsonl"):   # how the corpus is chunked, and in how many processes, changes nothing
        assert (out / f).read_bytes() == (tmp_path / "one" / f).read_bytes()


_PEAK_RSS = """
import resource, sys
from llmcourse.dedup import DedupConfig, dedup_corpus
dedup_corpus(sys.argv[1], sys.argv[2], DedupConfig(workers=1))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_peak_memory_does_not_grow_with_the_text(tmp_path):
    "Peak RSS of the stage (one process) on ~13 MB and ~50 MB of 6 kB documents: it grows far less than the corpus."
    rng = np.random.default_rng(0)
    vocab = np.array([f"word{i}" for i in range(5000)])
    peaks, sizes = [], []
    for name, n_docs in (("small", 2048), ("large", 8192)):   # whole chunks of the same kind of documents
        path = tmp_path / f"{name}.jsonl"
        with open(path, "w") as f:
            for k in range(n_docs):
                f.write(json.dumps({"id": f"doc-{k:07d}", "domain": "web", "text": " ".join(rng.choice(vocab, 700))}) + "\n")
        r = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(path), str(tmp_path / name)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        peaks.append(int(r.stdout.split()[-1]) * 1024)   # ru_maxrss is in kB on Linux
        sizes.append(path.stat().st_size)
    assert sizes[1] > 3.5 * sizes[0] > 30e6
    assert peaks[1] - peaks[0] < 0.25 * (sizes[1] - sizes[0]), (peaks, sizes)


def test_remove_domains_none_removes_contamination_everywhere(tmp_path):
    docs = [{"id": "k", "text": "What is 84 - 18? It is 66, as every pupil knows.", "domain": "knowledge"},
            {"id": "w", "text": "Quiz: What is 84 - 18? (1) 56 (2) 66", "domain": "web"}]
    _write(tmp_path / "in.jsonl", docs)
    _write(tmp_path / "eval.jsonl", [{"id": "q1", "text": "What is 84 - 18?", "choices": ["56", "66"], "answer": 1}])
    for domains, removed in ((("web",), {"w"}), (None, {"k", "w"})):
        st = dedup_corpus(tmp_path / "in.jsonl", tmp_path / str(domains), DedupConfig(workers=1), [tmp_path / "eval.jsonl"], domains)
        rows = [json.loads(l) for l in (tmp_path / str(domains) / "removed.jsonl").read_text().splitlines()]
        assert {r["id"] for r in rows} == removed and st["contamination"]["removed_docs"] == len(removed)


def test_contrastive_tune_pulls_each_pair_together():
    "Pairs that share no word: after tuning, each a_i's nearest b is its own b_i, which it was not before."
    import numpy as np
    import torch

    from llmcourse.cleaning import EncoderConfig, EncoderScorer, QualityEncoder, bert_config, train_hf_tokenizer
    from llmcourse.cleaning import ENCODER_SPECIALS
    from llmcourse.dedup import contrastive_tune

    names = ["amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "heron", "indigo", "jasper",
             "kelp", "lichen", "marble", "nectar", "onyx", "pollen"]
    a = [f"the {n} sat by the old wall" for n in names]
    b = [f"a {n} was seen near the river" for n in names[5:] + names[:5]]  # linked by the pairs only
    cfg = EncoderConfig(vocab_size=300, dim=32, layers=1, heads=2, max_tokens=16)
    hf = train_hf_tokenizer(a + b, "bpe", cfg.vocab_size, ENCODER_SPECIALS)
    torch.manual_seed(0)
    enc = EncoderScorer(["-"], hf, QualityEncoder(bert_config(cfg), 1).eval(), cfg.max_tokens)

    def hits():
        ea, eb = enc.embed(a), enc.embed(b)
        ea /= np.linalg.norm(ea, axis=1, keepdims=True)
        eb /= np.linalg.norm(eb, axis=1, keepdims=True)
        return int(((ea @ eb.T).argmax(1) == np.arange(len(a))).sum())

    before = hits()
    losses = contrastive_tune(enc, list(zip(a, b)), steps=150, batch_size=16, lr=3e-3)
    assert hits() == len(a) > before
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) and not enc.model.training
