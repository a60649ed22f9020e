"Chapter 02's vocabulary extension: appended merges learned on new text, which keep every old id and never shadow an old token."
import random

import numpy as np
import pytest

from llmcourse.tokenizer import Tokenizer, extend_bpe, learn_merges, train_bpe


def _boundaries(t, text):
    return set(np.cumsum([len(t.vocab[i]) for i in t.encode(text)])[:-1].tolist())


def test_extension_learns_the_new_pairs_and_appends_them():
    old = Tokenizer(*train_bpe(["ab ab ab abab"], 256 + 3, ["<|endoftext|>"]), ["<|endoftext|>"])
    assert [a + b for a, b in old.merges] == [b"ab", b" ab"]
    new = extend_bpe(old, ["cd cd cd cdcd cd"], 2)
    assert new.merges[:2] == old.merges                                      # the old merges first, in their order
    assert [a + b for a, b in new.merges[2:]] == [b"cd", b" cd"]             # the most frequent pairs of the new text
    eot = old.specials["<|endoftext|>"]
    assert {i: new.vocab[i] for i in old.vocab} == old.vocab and new.specials == old.specials
    assert sorted(set(new.vocab) - set(old.vocab)) == [eot + 1, eot + 2]     # after every old id, the special included
    assert new.encode("ab cd<|endoftext|>", allowed_special="all") == [old.token_id[b"ab"], eot + 2, eot]


def test_a_pair_that_is_already_a_token_is_passed_over():
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"ab"}
    words, kept = [[ord("a"), ord("b")], [ord("c"), ord("d")]], dict(vocab)
    assert learn_merges([list(w) for w in words], [5, 3], kept, 5, skip_existing=True) == [(ord("c"), ord("d"))]
    assert kept[257] == b"cd" and len(kept) == 258
    assert learn_merges([list(w) for w in words], [5, 3], dict(vocab), 5) == [(97, 98), (99, 100)]   # without: "ab" again


def test_extended_encoding_only_joins_old_tokens():
    rng = random.Random(0)
    en = ["the cat sat on the mat 12 34", "a dog and a cat", "print(x + 1)"] * 30
    zh = ["".join(rng.choice("中华人民共和国的历史文化是我们") for _ in range(20)) + " 12" for _ in range(80)]
    old = Tokenizer(*train_bpe(en, 256 + 40, ["<|endoftext|>"]), ["<|endoftext|>"])
    new = extend_bpe(old, zh, 60)
    assert len(new) == len(old) + 60
    for text in en[:3] + zh[:20] + ["mixed 中华 text 12"]:
        assert new.decode(new.encode(text)) == text
        assert _boundaries(new, text) <= _boundaries(old, text)                  # no old boundary moved, none added
    for text in en[:3]:
        assert new.encode(text) == old.encode(text) or "12" in text


def test_extension_input_errors():
    old = Tokenizer(*train_bpe(["ab ab"], 257, []), [])
    with pytest.raises(ValueError, match="lone surrogate"):
        extend_bpe(old, ["ok \ud800"], 3)
    assert len(extend_bpe(old, [""], 3)) == len(old)                              # nothing to learn: the same vocabulary
