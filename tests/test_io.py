"Every I/O error case of llmcourse.core: each bad line raises DataError naming file and line, or is recorded as a reject."
import gzip, json
from pathlib import Path

import pytest

from llmcourse.core import DataError, chunked, load_config, read_jsonl, read_parquet, save_config, write_jsonl, write_parquet

GOOD = b'{"id": "ok", "text": "fine"}\n'

CASES = [  # (bad line, expected reason fragment)
    (b'{"id": "x", "text": "unterminated\n', "invalid JSON"),
    (b'{"id": "x", "text": "trailing comma",}\n', "invalid JSON"),
    ('{"id": "x", "text": "na\u00efve"}\n'.encode("latin-1"), "invalid UTF-8"),
    ('{"id": "x", "text": "中文"}\n'.encode("gbk"), "invalid UTF-8"),
    (b'{"id": "x"}\n', "missing required field 'text'"),
    (b'{"text": "no id"}\n', "missing required field 'id'"),
    (b'{"id": "x", "text": 3.5}\n', "field 'text' should be str, got float"),
    (b'{"id": "x", "text": null}\n', "field 'text' should be str, got NoneType"),
    (b'{"id": 7, "text": "int id"}\n', "field 'id' should be str, got int"),
    (b'{"id": "x", "text": ["a", "list"]}\n', "field 'text' should be str, got list"),
    (b'{"id": "x", "text": ""}\n', "empty document"),
    (b'{"id": "x", "text": " \\n\\t "}\n', "empty document"),
    (b'"just a string"\n', "expected a JSON object, got str"),
    (b"[1, 2, 3]\n", "expected a JSON object, got list"),
    (b'{"id": "x", "text": "' + b"y" * 5000 + b'"}\n', "line longer than 1,000 bytes"),
]


@pytest.mark.parametrize("bad,reason", CASES, ids=[c[1] for c in CASES])
def test_bad_line_raises_with_file_and_line(tmp_path, bad, reason):
    p = tmp_path / "docs.jsonl"
    p.write_bytes(GOOD + GOOD.replace(b"ok", b"ok2") + bad + GOOD)
    with pytest.raises(DataError) as ei:
        list(read_jsonl(p, max_line_bytes=1000))
    e = ei.value
    assert (e.path, e.line) == (str(p), 3)
    assert reason in e.reason
    assert str(e).startswith(f"{p}:3: ")


@pytest.mark.parametrize("bad,reason", CASES, ids=[c[1] for c in CASES])
def test_bad_line_skipped_into_rejects_file(tmp_path, bad, reason):
    p, rej = tmp_path / "docs.jsonl", tmp_path / "out" / "rejects.jsonl"
    p.write_bytes(GOOD + bad + GOOD.replace(b"ok", b"ok3"))
    kept = list(read_jsonl(p, on_error="skip", rejects=rej, max_line_bytes=1000))
    assert [d["id"] for d in kept] == ["ok", "ok3"]
    rejects = [json.loads(l) for l in rej.read_text(encoding="utf-8").splitlines()]
    assert len(rejects) == 1
    r = rejects[0]
    assert (r["file"], r["line"]) == (str(p), 2) and reason in r["reason"]
    if len(bad) < 1000: assert r["raw"] == bad.decode("utf-8", "replace")[:2000]
    else: assert r["raw"] is None  # an over-long line is never loaded, so it cannot be stored


def test_skip_without_rejects_is_refused(tmp_path):
    p = tmp_path / "d.jsonl"; p.write_bytes(GOOD)
    with pytest.raises(ValueError, match="needs `rejects`"): list(read_jsonl(p, on_error="skip"))
    with pytest.raises(ValueError, match="on_error must be"): list(read_jsonl(p, on_error="ignore"))


def test_every_line_is_kept_or_rejected(tmp_path):
    "Mixed file: kept + rejected == lines (a blank line is recorded too), and the reject line numbers are exact."
    lines = [GOOD, CASES[0][0], GOOD, b"\n", CASES[4][0], CASES[11][0], GOOD]
    p = tmp_path / "mixed.jsonl"; p.write_bytes(b"".join(lines))
    rej: list = []
    kept = list(read_jsonl(p, on_error="skip", rejects=rej))
    assert len(kept) == 3 and [r["line"] for r in rej] == [2, 4, 5, 6]
    assert rej[1]["reason"].startswith("blank_line:")
    assert len(kept) + len(rej) == len(lines)
    assert [n for n, _ in read_jsonl(p, on_error="skip", rejects=[], with_lines=True)] == [1, 3, 7]


def test_long_line_does_not_break_following_lines(tmp_path):
    p = tmp_path / "long.jsonl"
    p.write_bytes(GOOD + b'{"id": "big", "text": "' + b"z" * 3_000_000 + b'"}\n' + b'{"id": "after", "text": "x"}\n')
    rej: list = []
    kept = list(read_jsonl(p, on_error="skip", rejects=rej, max_line_bytes=1_000_000))
    assert [d["id"] for d in kept] == ["ok", "after"] and rej[0]["line"] == 2


def test_last_line_without_newline_and_crlf(tmp_path):
    p = tmp_path / "crlf.jsonl"
    p.write_bytes(b'{"id": "a", "text": "x"}\r\n{"id": "b", "text": "y"}')
    assert [d["id"] for d in read_jsonl(p)] == ["a", "b"]


def test_bom_and_blank_lines(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + GOOD + b"\n   \n" + GOOD)
    assert len(list(read_jsonl(p))) == 2


def test_empty_file_yields_nothing(tmp_path):
    p = tmp_path / "empty.jsonl"; p.write_bytes(b"")
    assert list(read_jsonl(p)) == []


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError): list(read_jsonl(tmp_path / "nope.jsonl"))


def test_schema_none_and_custom(tmp_path):
    p = tmp_path / "s.jsonl"; p.write_bytes(b'{"a": 1}\n{"a": "x"}\n')
    assert len(list(read_jsonl(p, schema=None))) == 2
    with pytest.raises(DataError, match=r":2: field 'a' should be int"): list(read_jsonl(p, schema={"a": int}))
    q = tmp_path / "b.jsonl"; q.write_bytes(b'{"a": true}\n')
    with pytest.raises(DataError, match="should be int, got bool"): list(read_jsonl(q, schema={"a": int}))


def test_roundtrip_unicode_and_gzip_is_deterministic(tmp_path):
    recs = [{"id": str(i), "text": t, "domain": "web", "lang": l} for i, (t, l) in enumerate([("café\nnew line", "en"), ("中文，标点。", "zh"), ("emoji 🙂", "en")])]
    for name in ["a.jsonl", "a.jsonl.gz"]:
        assert write_jsonl(tmp_path / name, recs) == 3
        assert list(read_jsonl(tmp_path / name)) == recs
    assert "中文" in (tmp_path / "a.jsonl").read_text(encoding="utf-8")  # not \\u escapes
    first = (tmp_path / "a.jsonl.gz").read_bytes()
    write_jsonl(tmp_path / "a.jsonl.gz", recs)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == first and gzip.decompress(first) == (tmp_path / "a.jsonl").read_bytes()
    assert not list(tmp_path.glob("*.tmp"))


def test_gzip_bad_line_names_line(tmp_path):
    p = tmp_path / "d.jsonl.gz"
    p.write_bytes(gzip.compress(GOOD + b"{oops\n"))
    with pytest.raises(DataError, match=r"d\.jsonl\.gz:2: invalid JSON"): list(read_jsonl(p))


def test_parquet_roundtrip_and_errors(tmp_path):
    rows = [{"id": str(i), "n": i, "score": i / 4} for i in range(25)]
    assert write_parquet(tmp_path / "t.parquet", rows) == 25
    assert list(read_parquet(tmp_path / "t.parquet", batch_size=7)) == rows
    assert list(read_parquet(tmp_path / "t.parquet", columns=["n"]))[:2] == [{"n": 0}, {"n": 1}]
    (tmp_path / "fake.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="fake.parquet: not a readable Parquet file"): list(read_parquet(tmp_path / "fake.parquet"))
    with pytest.raises(FileNotFoundError, match="no such Parquet file"): list(read_parquet(tmp_path / "none.parquet"))


def test_config_roundtrip_and_unknown_keys(tmp_path):
    from llmcourse.pipeline import RunConfig
    cfg = RunConfig(out="x", seed=3, stages=["sources"])
    save_config(cfg, tmp_path / "c.json")
    assert load_config(RunConfig, tmp_path / "c.json") == cfg
    (tmp_path / "bad.json").write_text('{"out": "x", "sede": 3}')
    with pytest.raises(DataError, match=r"bad.json: unknown config keys \['sede'\]"): load_config(RunConfig, tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text('{"out": "x",\n "seed": }')
    with pytest.raises(DataError, match=r"broken.json:2: invalid JSON"): load_config(RunConfig, tmp_path / "broken.json")


def test_chunked():
    assert list(chunked(iter(range(5)), 2)) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError): list(chunked([1], 0))
