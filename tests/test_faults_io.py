"""Fault injection for inputs and files: broken text, cut files, bad configs, full disks, busy folders.

Every input line is kept or rejected with a reason; a failed write leaves no temporary file; a folder
has one owner at a time."""
import dataclasses, errno, json, os, subprocess, sys, tempfile, textwrap
from pathlib import Path

import pytest

import llmcourse.core as core
from llmcourse.core import (DataError, FolderBusyError, load_config, lock_folder, parse_jsonl_line,
                            read_jsonl, save_config, save_json, write_jsonl, write_parquet)

GOOD = b'{"id": "ok", "text": "fine"}\n'
SURROGATE = b'{"id": "s", "text": "half a pair \\ud800 here"}\n'   # valid JSON, invalid text
PAIR = b'{"id": "p", "text": "a whole pair \\ud83d\\ude00"}\n'    # an emoji, spelled as a surrogate pair


# --- lone surrogates ---------------------------------------------------------------------------------------

def test_lone_surrogate_line_raises_with_file_line_and_field(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(GOOD + SURROGATE + GOOD)
    with pytest.raises(DataError) as ei: list(read_jsonl(p))
    assert (ei.value.path, ei.value.line) == (str(p), 2)
    assert ei.value.reason.startswith("invalid_unicode:") and "'text'" in ei.value.reason


def test_lone_surrogate_line_rejected_in_skip_mode_and_pairs_still_parse(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(GOOD + SURROGATE + PAIR)
    rej: list = []
    kept = list(read_jsonl(p, on_error="skip", rejects=rej))
    assert [d["id"] for d in kept] == ["ok", "p"] and kept[1]["text"] == "a whole pair \U0001F600"
    assert [(r["file"], r["line"]) for r in rej] == [(str(p), 2)]
    assert rej[0]["reason"].startswith("invalid_unicode:")
    json.dumps(rej, ensure_ascii=False).encode("utf-8")  # the reject itself can be written


@pytest.mark.parametrize("line,where", [
    (b'{"id": "\\udfff", "text": "x"}', "'id'"),
    (b'{"id": "a", "text": "x", "meta": {"tags": ["ok", "\\uDC80"]}}', "'meta.tags[1]'"),
    (b'{"id": "a", "text": "x", "k\\ud800": 1}', "the name of field"),
])
def test_lone_surrogate_anywhere_is_named(line, where):
    with pytest.raises(ValueError, match="invalid_unicode") as ei: parse_jsonl_line(line)
    assert where in str(ei.value)


def test_escaped_backslash_is_not_a_surrogate():
    assert parse_jsonl_line(b'{"id": "a", "text": "\\\\ud800"}')["text"] == "\\ud800"


# --- truncated gzip ----------------------------------------------------------------------------------------

def _cut_gz(tmp_path: Path, n: int = 300) -> tuple[Path, list[dict]]:
    docs = [{"id": str(i), "text": f"document number {i} " * 20} for i in range(n)]
    p = tmp_path / "cut.jsonl.gz"
    write_jsonl(p, docs)
    whole = p.read_bytes()
    p.write_bytes(whole[: len(whole) // 2])
    return p, docs


def test_truncated_gzip_raises_data_error_naming_the_file(tmp_path):
    p, _ = _cut_gz(tmp_path)
    with pytest.raises(DataError) as ei: list(read_jsonl(p))
    assert ei.value.path == str(p) and "truncated or corrupt after line" in ei.value.reason


def test_truncated_gzip_skip_keeps_lines_before_and_records_the_cut(tmp_path):
    p, docs = _cut_gz(tmp_path)
    rej: list = []
    kept = list(read_jsonl(p, on_error="skip", rejects=rej))
    assert 0 < len(kept) < len(docs) and kept == docs[: len(kept)]
    assert len(rej) == 1 and rej[0]["reason"].startswith("truncated:") and rej[0]["line"] == len(kept) + 1


def test_not_gzip_at_all(tmp_path):
    p = tmp_path / "fake.jsonl.gz"
    p.write_bytes(GOOD)
    rej: list = []
    assert list(read_jsonl(p, on_error="skip", rejects=rej)) == []
    assert rej[0]["reason"].startswith("truncated:")


# --- blank lines -------------------------------------------------------------------------------------------

def test_blank_lines_recorded_in_skip_mode_silent_in_raise_mode(tmp_path):
    p = tmp_path / "b.jsonl"
    lines = [GOOD, b"\n", b"  \t \n", GOOD, b"\r\n"]
    p.write_bytes(b"".join(lines))
    assert len(list(read_jsonl(p))) == 2
    rej: list = []
    kept = list(read_jsonl(p, on_error="skip", rejects=rej))
    assert len(kept) + len(rej) == len(lines)
    assert [r["line"] for r in rej] == [2, 3, 5] and all(r["reason"].startswith("blank_line:") for r in rej)


# --- load_config -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Cfg:
    vocab_size: int = 512
    batch_size: int = 8
    lr: float = 1e-3
    name: str = "run"
    compile: bool = False
    stages: list[str] = dataclasses.field(default_factory=list)
    overrides: dict = dataclasses.field(default_factory=dict)
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    device: str | None = None


@pytest.mark.parametrize("field,value,want", [
    ("vocab_size", "512", "int"), ("batch_size", 1.5, "int"), ("batch_size", True, "int"),
    ("lr", "0.1", "float"), ("lr", False, "float"), ("name", 3, "str"), ("compile", 1, "bool"),
    ("stages", "clean", "list[str]"), ("stages", ["clean", 2], "list[str]"), ("overrides", [1], "dict"),
    ("weights", {"a": "x"}, "dict[str, float]"), ("device", 0, "str | None"),
])
def test_load_config_wrong_type_names_field_type_and_value(tmp_path, field, value, want):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({field: value}))
    with pytest.raises(DataError) as ei: load_config(_Cfg, p)
    msg = str(ei.value)
    assert str(p) in msg and repr(field) in msg and want in msg and repr(value) in msg


def test_load_config_accepts_right_types(tmp_path):
    p = tmp_path / "config.json"
    good = {"lr": 1, "device": None, "stages": ["a"], "weights": {"a": 2}, "overrides": {"x": [1]}}
    p.write_text(json.dumps(good))
    assert load_config(_Cfg, p) == _Cfg(lr=1, stages=["a"], weights={"a": 2}, overrides={"x": [1]})
    save_config(_Cfg(device="cpu"), p)
    assert load_config(_Cfg, p) == _Cfg(device="cpu")


def test_load_config_not_utf8_and_not_object(tmp_path):
    p = tmp_path / "config.json"
    p.write_bytes('{"name": "café"}'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text") as ei: load_config(_Cfg, p)
    assert ei.value.path == str(p)
    p.write_text("[1, 2]")
    with pytest.raises(DataError, match="JSON object"): load_config(_Cfg, p)


# --- failed writes leave no .tmp ---------------------------------------------------------------------------

class _FullDisk:
    "A binary file whose `n`-th write fails as a full disk does."
    def __init__(self, f, n: int): self.f, self.n = f, n
    def write(self, b):
        self.n -= 1
        if self.n <= 0: raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(b)
    def __getattr__(self, name): return getattr(self.f, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self.f.close()


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_write_jsonl_full_disk_leaves_no_tmp_and_keeps_old_file(tmp_path, monkeypatch, name):
    p = tmp_path / name
    write_jsonl(p, [{"id": "old", "text": "x"}])
    before = p.read_bytes()
    real_open = open
    monkeypatch.setattr(core, "open", lambda *a, **k: _FullDisk(real_open(*a, **k), 3), raising=False)
    docs = ({"id": str(i), "text": "y" * 100_000} for i in range(50))
    with pytest.raises(OSError) as ei: write_jsonl(p, docs)
    assert ei.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmp_path)) == [name] and p.read_bytes() == before


def test_save_json_full_disk_leaves_no_tmp(tmp_path, monkeypatch):
    def half_then_full(self, data, **kw):
        Path.write_bytes(self, data[: len(data) // 2].encode())
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(OSError): save_json({"a": list(range(1000))}, tmp_path / "s.json")
    assert os.listdir(tmp_path) == []


def test_write_parquet_full_disk_leaves_no_tmp(tmp_path, monkeypatch):
    import pyarrow.parquet as pq
    def half_then_full(table, where, **kw):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(pq, "write_table", half_then_full)
    with pytest.raises(OSError): write_parquet(tmp_path / "t.parquet", [{"a": 1}])
    assert os.listdir(tmp_path) == []


def test_real_file_size_limit_in_a_subprocess(tmp_path):
    "The kernel refuses the write (RLIMIT_FSIZE, SIGXFSZ ignored): OSError, and no .tmp file left."
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from llmcourse.core import write_jsonl, save_json
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
        docs = ({{"id": str(i), "text": "x" * 1000}} for i in range(500))
        for write in (lambda: write_jsonl({str(tmp_path / 'big.jsonl')!r}, docs),
                      lambda: save_json(["y" * 1000] * 500, {str(tmp_path / 'big.json')!r})):
            try: write(); print("no error")
            except OSError as e: print("OSError", e.errno)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["OSError", str(errno.EFBIG), "OSError", str(errno.EFBIG)]
    assert os.listdir(tmp_path) == []


# --- lock_folder -------------------------------------------------------------------------------------------

HOLDER = """
import sys, time
from llmcourse.core import lock_folder
with lock_folder(sys.argv[1], "test run"):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_lock_folder_second_holder_fails_naming_the_pid_and_dead_holder_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderBusyError) as ei:
            with lock_folder(folder, "pipeline"): pass
        assert f"pid {holder.pid}" in str(ei.value) and str(folder) in str(ei.value)
        assert "another llmcourse pipeline" in str(ei.value)
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the lock file still names the dead pid
        holder.wait()
    assert json.loads((folder / ".lock").read_text())["pid"] == holder.pid
    with lock_folder(folder) as lock:
        assert lock.took_over_from == holder.pid
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
    with lock_folder(folder) as lock:
        assert lock.took_over_from is None  # a clean exit leaves nothing to take over


def test_lock_folder_same_process_twice_is_busy(tmp_path):
    with lock_folder(tmp_path / "x"):
        with pytest.raises(FolderBusyError, match=f"pid {os.getpid()}"):
            with lock_folder(tmp_path / "x"): pass


# --- samples: max_files=0 means nothing --------------------------------------------------------------------

def test_stdlib_documents_zero_files_means_none():
    from llmcourse.samples import stdlib_code_documents, stdlib_prose_documents
    assert list(stdlib_prose_documents(0)) == [] and list(stdlib_code_documents(0)) == []
    assert any(d["id"].startswith("stdlib-topic-") for d in stdlib_prose_documents(1))


# --- tokenizer ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("special", ["", None, 3, b"<|eot|>"])
def test_train_bpe_refuses_empty_or_non_str_special_tokens(special):
    from llmcourse.tokenizer import train_bpe
    with pytest.raises(ValueError, match="non-empty strings"):
        train_bpe(["low lower lowest"], 260, ["<|eot|>", special])


def test_train_bpe_lone_surrogate_names_the_text():
    from llmcourse.tokenizer import train_bpe
    for bad in ("x \ud800 y", "x \udc80 y"):  # \udc80 used to pass silently, as a raw byte (surrogateescape)
        with pytest.raises(ValueError, match=r"text 1 holds a lone surrogate.*clean"):
            train_bpe(["fine", bad], 260)


@pytest.mark.parametrize("kind", ["empty", "garbage", "truncated", "not_a_tokenizer", "list", "bad_model"])
def test_tokenizer_load_refuses_non_tokenizers_with_data_error(tmp_path, kind):
    from llmcourse.tokenizer import Tokenizer, train_bpe
    tok = Tokenizer(*train_bpe(["low lower lowest"] * 3, 270, ["<|endoftext|>"]), ["<|endoftext|>"])
    whole = tok.save(tmp_path / "tokenizer.json").read_bytes()
    assert Tokenizer.load(tmp_path / "tokenizer.json").specials == tok.specials
    data = {"empty": b"", "garbage": bytes(range(256)), "truncated": whole[: len(whole) // 2],
            "not_a_tokenizer": b'{"lr": 0.1}', "list": b"[1, 2]", "bad_model": b'{"model": 3}'}[kind]
    p = tmp_path / f"{kind}.json"
    p.write_bytes(data)
    with pytest.raises(DataError, match="not a tokenizer.json") as ei: Tokenizer.load(p)
    assert ei.value.path == str(p)


# --- cleaning ----------------------------------------------------------------------------------------------

_PROSE = "The station log was checked again before the storm, and the readings were normal. " * 4


def test_clean_corpus_accounts_for_every_hostile_line(tmp_path):
    from llmcourse.cleaning import CleanConfig, clean_corpus, read_documents
    lines = [
        json.dumps({"id": "good", "text": _PROSE, "domain": "prose", "lang": "en"}).encode() + b"\n",
        b'{"id": "broken", "text": \n',                                                   # bad JSON
        b'{"id": "latin1", "text": "caf\xe9"}\n',                                         # invalid UTF-8
        SURROGATE,                                                                        # lone surrogate
        b"   \n",                                                                         # blank
        b'{"id": "notext"}\n',                                                            # missing text
        json.dumps({"id": "long", "text": _PROSE * 20, "domain": "prose", "lang": "en"}).encode() + b"\n",
    ]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(lines))
    unread: list = []
    docs = [*read_documents([src], unread), {"id": "py", "text": "broken \udc80 text"},
            {"id": "py-id-\ud800", "text": _PROSE}]
    out = tmp_path / "out"
    st = clean_corpus(docs, out, CleanConfig(workers=1, max_chars=2000), unreadable=unread)
    assert st["read"] == len(lines) + 2 and st["kept"] + st["rejected"] == st["read"]
    rej = [json.loads(l) for l in open(out / "rejected.jsonl", encoding="utf-8")]
    kept = [json.loads(l) for l in open(out / "kept.jsonl", encoding="utf-8")]
    assert [k["id"] for k in kept] == ["good"]
    from_file = sorted((r["line"], r["rule"]) for r in rej if r["file"] == str(src))
    assert from_file == [(2, "unreadable"), (3, "unreadable"), (4, "invalid_unicode"), (5, "blank_line"),
                         (6, "unreadable"), (7, "too_long")]
    from_python = [r for r in rej if r["file"] == "<iterable>"]
    assert [r["rule"] for r in from_python] == ["invalid_unicode", "invalid_unicode"]
    assert "'text'" in from_python[0]["reason"] and "'id'" in from_python[1]["reason"]
    assert sorted(os.listdir(out)) == ["clean_stats.json", "kept.jsonl", "rejected.jsonl"]


def test_clean_corpus_truncated_gzip_is_a_truncated_reject(tmp_path):
    from llmcourse.cleaning import CleanConfig, clean_corpus, read_documents
    p, docs = _cut_gz(tmp_path)
    unread: list = []
    docs_in = read_documents([p], unread)
    st = clean_corpus(docs_in, tmp_path / "out", CleanConfig(workers=1), unreadable=unread)
    assert st["by_rule"].get("truncated") == 1 and st["kept"] + st["rejected"] == st["read"]


def test_clean_corpus_failure_leaves_no_file_behind(tmp_path, monkeypatch):
    import llmcourse.cleaning as cleaning
    def fails_half_way():
        yield {"id": "a", "text": _PROSE}
        raise OSError("the input went away")
    out = tmp_path / "first_pass"
    with pytest.raises(OSError): cleaning.clean_corpus(fails_half_way(), out, cleaning.CleanConfig(workers=1))
    assert os.listdir(out) == []
    # a failure between the passes, after the temporary file is written: same
    monkeypatch.setattr(cleaning, "_unreadable_reject", lambda r: 1 / 0)
    out = tmp_path / "between"
    with pytest.raises(ZeroDivisionError):
        cleaning.clean_corpus([{"id": "a", "text": _PROSE}], out, cleaning.CleanConfig(workers=1),
                              unreadable=[{"file": "f", "line": 1, "reason": "x", "raw": None}])
    assert os.listdir(out) == []


def test_clean_corpus_failed_rerun_keeps_the_finished_outputs(tmp_path):
    from llmcourse.cleaning import CleanConfig, clean_corpus
    out = tmp_path / "out"
    clean_corpus([{"id": "a", "text": _PROSE, "lang": "en"}], out, CleanConfig(workers=1))
    before = {f: (out / f).read_bytes() for f in ("kept.jsonl", "rejected.jsonl")}
    def fails():
        yield {"id": "b", "text": _PROSE}
        raise OSError("boom")
    with pytest.raises(OSError): clean_corpus(fails(), out, CleanConfig(workers=1))
    assert {f: (out / f).read_bytes() for f in before} == before
    assert sorted(os.listdir(out)) == ["clean_stats.json", "kept.jsonl", "rejected.jsonl"]


# --- run_ranks ---------------------------------------------------------------------------------------------

def _rank_sum(rank, world):
    import torch, torch.distributed as dist
    t = torch.tensor([float(rank)])
    dist.all_reduce(t)
    return float(t)


def _rank_fails(rank, world):
    raise ValueError(f"rank {rank} fails on purpose")


def test_run_ranks_leaves_no_temp_folder(tmp_path, monkeypatch):
    from llmcourse.distributed import run_ranks
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert run_ranks(_rank_sum, 2) == [1.0, 1.0]
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError, match="fails on purpose"): run_ranks(_rank_fails, 2)
    assert os.listdir(tmp_path) == []
