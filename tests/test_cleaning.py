"Chapter 03's cleaning stage on whole files, in worker processes: nothing lost or leaked, bad input survived."
import json
from collections import Counter

import pytest

from llmcourse.cleaning import CleanConfig, clean_corpus, find_pii, mask_pii, read_documents
from llmcourse.samples import load_samples
from llmcourse.tokenizer import TRAIN_FILES


def _lines(path):
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def cleaned(repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    unread = []
    stats = clean_corpus(read_documents([repo_root / "data_samples" / f for f in TRAIN_FILES], unread), out,
                         CleanConfig(workers=2, chunksize=16), unreadable=unread)
    return out, stats


def test_every_document_kept_or_rejected(cleaned, repo_root):
    out, stats = cleaned
    ids = [d["id"] for f in TRAIN_FILES for d in load_samples(f, repo_root / "data_samples")]
    kept, rej = _lines(out / "kept.jsonl"), _lines(out / "rejected.jsonl")
    assert stats["read"] == len(ids) == len(kept) + len(rej)
    assert ids and sorted([d["id"] for d in kept] + [r["id"] for r in rej]) == sorted(ids)
    assert all(r["reason"] and r["rule"] and r["file"].endswith(".jsonl") and r["line"] >= 1 for r in rej)
    where = {d["id"]: (d["source"], d["line"]) for d in kept}
    math_lines = (repo_root / "data_samples" / "math.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(math_lines[0])
    assert where[first["id"]][1] == 1 and where[first["id"]][0].endswith("math.jsonl")


def test_no_planted_pii_survives(cleaned, repo_root):
    out, _ = cleaned
    kept = {d["id"]: d for d in _lines(out / "kept.jsonl")}
    web = [d for f in ("web_en.jsonl", "web_zh.jsonl") for d in load_samples(f, repo_root / "data_samples")]
    checked = 0
    for d in web:
        if d["id"] in kept and d["pii_values"]:
            checked += 1
            assert not any(v in kept[d["id"]]["text"] for v in d["pii_values"]), d["id"]
            assert sum(kept[d["id"]]["pii"].values()) >= len(d["pii_values"])
            assert "pii_values" not in kept[d["id"]] and "main_text" not in kept[d["id"]]  # no ground truth
    assert checked > 100


def test_junk_mostly_removed_and_articles_mostly_kept(cleaned, repo_root):
    out, _ = cleaned
    kept = {d["id"] for d in _lines(out / "kept.jsonl")}
    web = [d for f in ("web_en.jsonl", "web_zh.jsonl") for d in load_samples(f, repo_root / "data_samples")]
    kinds = Counter((d["kind"], d["id"] in kept) for d in web)
    junk_kept = sum(v for (k, k_), v in kinds.items() if k != "article" and k_)
    junk = sum(v for (k, _), v in kinds.items() if k != "article")
    assert junk_kept / junk < 0.15
    assert kinds[("article", True)] / (kinds[("article", True)] + kinds[("article", False)]) > 0.85
    for f in ("knowledge_en.jsonl", "knowledge_zh.jsonl", "math.jsonl", "code.jsonl"):  # not judged as web
        assert all(d["id"] in kept for d in load_samples(f, repo_root / "data_samples")), f


def test_bad_input_in_worker_processes(tmp_path):
    bad = tmp_path / "bad.jsonl"
    docs = [{"id": "huge", "text": "x " * 6_000_000, "domain": "web", "lang": "en"},
            {"id": "deep", "text": "<div>" * 20000 + "text", "domain": "web", "lang": "en"},
            {"id": "nul", "text": "a\x00b " * 40, "domain": "math", "lang": "en"},
            {"id": "zh", "text": "这是一个很普通的句子，用来检查中文文档在清洗阶段会被正常保留下来。" * 3,
             "domain": "knowledge", "lang": "zh"}]
    with open(bad, "wb") as f:
        f.write(b"\xff\xfe not utf-8\n")
        for d in docs:
            f.write(json.dumps(d).encode() + b"\n")
        f.write(b"[1, 2]\n")
    unread = []
    stats = clean_corpus(read_documents([bad], unread), tmp_path / "out", CleanConfig(workers=2, chunksize=1),
                         unreadable=unread)
    rej = {r["line"]: r for r in _lines(tmp_path / "out" / "rejected.jsonl")}
    kept = {d["id"]: d for d in _lines(tmp_path / "out" / "kept.jsonl")}
    assert stats["read"] == 6 and stats["kept"] + stats["rejected"] == 6
    assert rej[1]["rule"] == "unreadable" and "invalid UTF-8" in rej[1]["reason"]
    assert rej[2]["rule"] == "too_long"
    assert rej[6]["rule"] == "unreadable" and "JSON object" in rej[6]["reason"]
    assert 3 in rej and rej[3]["reason"]  # 20,000 unclosed tags: rejected with a reason, not a crash
    assert kept["nul"]["text"].startswith("ab ab") and "\x00" not in kept["nul"]["text"]
    assert set(kept) == {"nul", "zh"}


def test_pii_exact_cases():
    text = ("Mail mia@example.com, call 138-1234-5678 or (779) 555-0173; "
            "host 2001:db8::7334:1; id 11010519491231002X.")
    assert mask_pii(text)[0] == "Mail <EMAIL>, call <PHONE> or <PHONE>; host <IP>; id <ID_NUMBER>."
    assert find_pii("version 3.12.1.4.5, 2010–2024, 12:30:45, a[::2], 110105194912310021") == []


def test_documents_from_python_without_id_or_text_are_rejected(tmp_path):
    ordinary = "A perfectly ordinary sentence about the weather, long enough."
    docs = [{"id": "a", "text": ordinary, "domain": "prose", "lang": "en"},
            {"text": "no id here"}, {"id": "b"}, {"id": 3, "text": "numeric id"}, "not a dict"]
    stats = clean_corpus(iter(docs), tmp_path, CleanConfig(workers=1))
    assert (stats["read"], stats["kept"], stats["rejected"]) == (5, 1, 4)
    assert stats["by_rule"] == {"bad_document": 4}


def _web_batch(repo_root, n=48):
    from llmcourse.cleaning import prepare_document

    docs = list(load_samples(["web_en.jsonl"], repo_root / "data_samples"))[:n]
    return [prepare_document(d) for d in docs]


def test_batched_finish_equals_one_at_a_time(repo_root, tmp_path):
    "The quality model scores a batch in one call; each document's verdict is the one it gets alone."
    import copy

    from llmcourse.cleaning import finish_document, finish_documents, train_text_classifier

    prepared = [d for d in _web_batch(repo_root) if "reason" not in d]
    clf = train_text_classifier([d["text"] for d in prepared], ["high" if i % 3 else "low" for i in range(len(prepared))])
    cfg = CleanConfig(quality_model=str(clf.save(tmp_path / "q.pt")), quality_thresholds=0.5)
    batched = finish_documents(copy.deepcopy(prepared), frozenset(), cfg)
    alone = [finish_document(copy.deepcopy(d), frozenset(), cfg) for d in prepared]
    assert [d.get("reason") for d in batched] == [d.get("reason") for d in alone]
    assert [d.get("text") for d in batched] == [d.get("text") for d in alone]
    assert {"quality"} <= {d.get("rule") for d in batched} and any("reason" not in d for d in batched)
    kept = [d for d in batched if "reason" not in d]
    assert all(d["quality"] >= 0.5 for d in kept)


def test_quality_model_failure_rejects_the_batch_with_its_reason(repo_root, tmp_path):
    "A quality model that cannot be read rejects each document that reached it, naming the error."
    from llmcourse.cleaning import finish_documents

    prepared = [d for d in _web_batch(repo_root, 12) if "reason" not in d]
    (tmp_path / "broken.pt").write_bytes(b"not a model")
    out = finish_documents(prepared, frozenset(), CleanConfig(quality_model=str(tmp_path / "broken.pt")))
    assert len(out) == len(prepared)
    errors = [d for d in out if d.get("rule") == "error"]
    assert errors and all(d["reason"].startswith("error in finish: quality model: ") for d in errors)
    assert all(d.get("rule") for d in out)  # none kept without a score
