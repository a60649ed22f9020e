"Chapter 03's PII detector, measured on hand-written, hand-labelled snippets (tests/data/pii_labelled.jsonl)."
import json

import pytest

from llmcourse.cleaning import find_pii, mask_pii, pii_span_scores

KINDS = {"email", "phone", "ip", "id_number"}


@pytest.fixture(scope="module")
def labelled(repo_root):
    lines = (repo_root / "tests" / "data" / "pii_labelled.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(l) for l in lines]


def test_labelled_set_is_well_formed(labelled):
    assert len(labelled) >= 200
    assert len({r["id"] for r in labelled}) == len(labelled)
    for r in labelled:
        spans = sorted(r["spans"])
        assert all(0 <= a < b <= len(r["text"]) and kind in KINDS for a, b, kind in spans), r["id"]
        assert all(x[1] <= y[0] for x, y in zip(spans, spans[1:])), r["id"]  # no overlapping spans
        assert all(r["text"][a:b] == r["text"][a:b].strip() for a, b, _ in spans), r["id"]
    per_kind = {k: sum(s[2] == k for r in labelled for s in r["spans"]) for k in KINDS}
    assert min(per_kind.values()) >= 10, per_kind
    assert sum(not r["spans"] for r in labelled) >= 100  # snippets with look-alikes only
    assert sum(any("\u4e00" <= c <= "\u9fff" for c in r["text"]) for r in labelled) >= 60  # Chinese


def test_precision_and_recall_floors(labelled):
    kinds = pii_span_scores(labelled, find_pii)["kinds"]
    assert kinds["all"]["precision"] >= 0.95 and kinds["all"]["recall"] >= 0.95, kinds["all"]
    assert kinds["phone"]["precision"] >= 0.95 and kinds["phone"]["recall"] >= 0.95, kinds["phone"]
    ip, email, ids = kinds["ip"], kinds["email"], kinds["id_number"]
    assert ip["precision"] >= 0.9 and ip["recall"] >= 0.95, ip
    assert email["precision"] >= 0.95 and email["recall"] >= 0.9, email
    assert ids["precision"] >= 0.95 and ids["recall"] >= 0.95, ids


def test_span_scores_on_a_small_case():
    spans = [[5, 13, "phone"], [17, 30, "email"]]
    recs = [{"id": "a", "text": "call 555-0142 or x@example.org", "spans": spans}]
    found = {recs[0]["text"]: [(5, 13, "phone", "555-0142"), (4, 13, "phone", " 555-0142")]}
    s = pii_span_scores(recs, found.get)
    assert s["kinds"]["all"] == {"labelled": 2, "found": 2, "correct": 1, "precision": 0.5, "recall": 0.5}
    assert [m[:3] for m in s["misses"]] == [("a", "email", "x@example.org")]
    assert [f[:3] for f in s["false_alarms"]] == [("a", "phone", " 555-0142")]


@pytest.mark.parametrize(
    "text, want",
    [
        ("Call us at (283) 182 3829 today.", "Call us at <PHONE> today."),
        ("Front desk: (283)-182-3829.", "Front desk: <PHONE>."),
        ("text me on 2831823829 if the gate is locked", "text me on <PHONE> if the gate is locked"),
        ("From abroad dial +1 283 182 3829.", "From abroad dial <PHONE>."),
        ("Fax 212.555.0147 or 1-800-555-0199", "Fax <PHONE> or <PHONE>"),
        ("手机 +86 139-0013-9000，座机 (0755) 8655 0123", "手机 <PHONE>，座机 <PHONE>"),
        ("北京 010-6555 0123，深圳 0755-86550123", "北京 <PHONE>，深圳 <PHONE>"),
        ("hosts 2001:db8::1, fe80::1ff:fe23:4567:890a and 192.0.2.7:8080", "hosts <IP>, <IP> and <IP>:8080"),
        ("write to sam [at] example [dot] org or jo@example.com", "write to <EMAIL> or <EMAIL>"),
        ("身份证号11010519491231002X", "身份证号<ID_NUMBER>"),
    ],
)
def test_masks_the_forms_people_write(text, want):
    assert mask_pii(text)[0] == want


@pytest.mark.parametrize(
    "text",
    [
        "order #2831823829 shipped",
        "INV-2024-0042 and Ref. No. 3125550100",
        "订单号：13855501234，学号 2023456789",
        "install version 1.2.3.4 with Python 3.11.4 and v2.10.1",
        "on 2024-03-15 (15/03/2024, 2024年3月15日) at 12:30:45 for $1,299.00 or ¥3999",
        "ISBN 8175257660; ISBN 978-0-306-40615-7; epoch 1710460800; 99.95% uptime",
        "netmask 255.255.255.0, loopback 127.0.0.1, std::vector<int>, a[::2], ratio 16:9, icon@2x.png",
        "INT_MAX = 2147483647",
        "身份证号码 110105194912310021 校验位不对",
    ],
)
def test_leaves_look_alikes_alone(text):
    assert find_pii(text) == []
