"Chapter 04's dedup stage on a constructed corpus with known answers, with signatures in worker processes."
import json

import numpy as np

from llmcourse.dedup import (DedupConfig, dedup_corpus, jaccard, minhash, minhash_signatures, near_duplicates,
                             near_duplicates_partitioned, shingle_hashes)

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
