"Chapter 11: RoPE scaling formulas against their definitions and against transformers; bad input; continuing a run from another's weights."
import math

import pytest
import torch

from llmcourse.long_context import (
    EXTENSION_METHODS,
    binomial_interval,
    extension_overrides,
    nll_by_position,
    rope_at_length,
    yarn_ramp,
)
from llmcourse.model import Llama, ModelConfig, preset, rope_frequencies


def _cfg(d=64, theta=10_000.0, max_len=8192):
    return ModelConfig(vocab_size=64, dim=d * 4, n_layers=1, n_heads=4, n_kv_heads=4, max_seq_len=max_len, rope_theta=theta)


@pytest.mark.parametrize("d,theta,s", [(64, 10_000.0, 2), (128, 500_000.0, 8), (32, 1e6, 4.5)])
def test_closed_forms(d, theta, s):
    c = _cfg(d, theta)
    j = torch.arange(0, d, 2, dtype=torch.float64) / d
    base = theta ** -j
    lin, _ = rope_frequencies(d, theta, {"type": "linear", "factor": s}, c)
    torch.testing.assert_close(lin.double(), base / s, rtol=1e-6, atol=0)
    ntk, _ = rope_frequencies(d, theta, {"type": "ntk", "factor": s}, c)
    torch.testing.assert_close(ntk.double(), (theta * s ** (d / (d - 2))) ** -j, rtol=1e-6, atol=0)
    assert ntk[0] == 1.0 and math.isclose(float(ntk[-1]), float(base[-1]) / s ** ((d - 2) / (d - 2)), rel_tol=1e-5)  # slowest pair ÷ s
    L0 = 1024
    dyn, _ = rope_frequencies(d, theta, {"type": "dynamic", "factor": s, "original_max_seq_len": L0, "seq_len": 3 * L0}, c)
    torch.testing.assert_close(dyn.double(), (theta * (s * 3 - (s - 1)) ** (d / (d - 2))) ** -j, rtol=1e-6, atol=0)
    same, _ = rope_frequencies(d, theta, {"type": "dynamic", "factor": s, "original_max_seq_len": L0, "seq_len": L0 // 2}, c)
    torch.testing.assert_close(same.double(), base, rtol=1e-6, atol=0)


@pytest.mark.parametrize("d,theta,s,L0", [(64, 10_000.0, 4, 2048), (128, 500_000.0, 8, 8192), (128, 10_000.0, 16, 4096)])
def test_yarn_follows_its_rules(d, theta, s, L0):
    "Pairs that turn more than beta_fast times in L0 keep their frequency, fewer than beta_slow are divided by s, the ramp is monotone."
    c = _cfg(d, theta)
    inv, scale = rope_frequencies(d, theta, {"type": "yarn", "factor": s, "original_max_seq_len": L0}, c)
    base = theta ** -(torch.arange(0, d, 2, dtype=torch.float64) / d)
    turns = L0 * base / (2 * math.pi)
    keep = yarn_ramp(d, theta, L0)
    assert torch.all(keep[turns > 32] == 1) and torch.all(keep[turns < 1] == 0)
    assert torch.all(keep[:-1] >= keep[1:])
    torch.testing.assert_close(inv.double(), base * keep + base / s * (1 - keep), rtol=1e-6, atol=0)
    assert math.isclose(scale, 0.1 * math.log(s) + 1)


@pytest.mark.parametrize("kind", ["linear", "dynamic", "yarn"])
def test_equal_to_transformers(kind):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    c = _cfg(64, 50_000.0, 16_384)
    ours = {"factor": 4} if kind == "linear" else {"factor": 4, "original_max_seq_len": 4096}
    hf = {"factor": 4} if kind != "yarn" else {"factor": 4, "original_max_position_embeddings": 4096}
    hcfg = LlamaConfig(hidden_size=256, num_attention_heads=4, max_position_embeddings=4096 if kind == "dynamic" else 16_384,
                       rope_parameters={"rope_type": kind, "rope_theta": 50_000.0, **hf})
    hf_inv, hf_scale = ROPE_INIT_FUNCTIONS[kind](hcfg, "cpu", 16_384 if kind == "dynamic" else None)
    inv, scale = rope_frequencies(64, 50_000.0, {"type": kind, **ours}, c)
    torch.testing.assert_close(inv, hf_inv.float(), rtol=1e-6, atol=1e-9)
    assert math.isclose(scale, hf_scale, rel_tol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="factor must be a number >= 1"):
        rope_frequencies(64, 1e4, {"type": "ntk", "factor": 0.9}, _cfg())
    with pytest.raises(ValueError, match="unknown extension method"):
        extension_overrides("pi", 512)
    with pytest.raises(ValueError, match="exceed max_seq_len"):
        Llama(preset("tiny", max_seq_len=16))(torch.zeros(1, 17, dtype=torch.long))


def test_every_method_builds_a_model_and_dynamic_follows_the_length():
    for m in EXTENSION_METHODS:
        Llama(preset("tiny", **extension_overrides(m, 64)))
    model = Llama(preset("tiny", **extension_overrides("dynamic", 64)))
    before = model.inv_freq.clone()
    with rope_at_length(model, 128):
        mid = model.inv_freq.clone()
    assert torch.equal(model.inv_freq, before) and torch.all(mid[1:] > before[1:])   # 128 < 256: a smaller base than at full length


def test_init_from_starts_from_another_runs_weights(tmp_path):
    "TrainConfig.init_from: a new run starts from the latest weights of another (same shape), a mismatched one is refused."
    from llmcourse.data import tokenize_to_shards
    from llmcourse.evaluation import load_trained_model
    from llmcourse.tokenizer import Tokenizer, train_bpe
    from llmcourse.training import TrainConfig, load_checkpoint, train
    texts = [f"document {i} says {' '.join(str(j * i % 97) for j in range(60))}" for i in range(40)]
    tok = Tokenizer(*train_bpe(texts, 300, ["<|endoftext|>"]), ["<|endoftext|>"])
    path = tok.save(tmp_path / "tokenizer.json")
    tokenize_to_shards([{"id": str(i), "text": t, "group": "g"} for i, t in enumerate(texts)], path, tmp_path / "shards", workers=1)
    base = dict(shards=str(tmp_path / "shards"), model="tiny", model_overrides={"dim": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 32},
                seq_len=32, batch_size=2, eval_every=0, ckpt_every=0, tensorboard=False, device="cpu", threads=1)
    train(TrainConfig(out=str(tmp_path / "a"), max_steps=3, **base))
    a, _ = load_trained_model(tmp_path / "a")
    longer = {**base, "seq_len": 64, "model_overrides": {**base["model_overrides"], **extension_overrides("yarn", 32, 2)}}
    train(TrainConfig(out=str(tmp_path / "b"), max_steps=1, lr=0.0, init_from=str(tmp_path / "a"), **longer))
    step0 = torch.load(tmp_path / "b" / "ckpt_0000000.pt", weights_only=True)["model"]
    for k, v in a.state_dict().items():
        assert torch.equal(step0[k], v), k  # started from a's weights
    assert load_checkpoint(tmp_path / "b")["step"] == 1
    with pytest.raises(ValueError, match="do not fit this model"):
        train(TrainConfig(out=str(tmp_path / "c"), max_steps=1, init_from=str(tmp_path / "a"),
                          **{**base, "model_overrides": {**base["model_overrides"], "dim": 64}}))
    with pytest.raises(FileNotFoundError, match="has no checkpoint"):
        train(TrainConfig(out=str(tmp_path / "d"), max_steps=1, init_from=str(tmp_path / "nothing"), **base))


@pytest.mark.parametrize("hits,n", [(0, 10), (3, 10), (10, 10), (31, 144), (1, 1000)])
def test_binomial_interval_is_wilsons(hits, n):
    "Against scipy's Wilson interval, and the interval holds the observed rate."
    from scipy.stats import binomtest
    ref = binomtest(hits, n).proportion_ci(0.95, method="wilson")
    lo, hi = binomial_interval(hits, n)
    assert lo == pytest.approx(ref.low, abs=1e-4) and hi == pytest.approx(ref.high, abs=1e-4)
    assert lo <= hits / n <= hi
    with pytest.raises(ValueError, match="hits <= n"):
        binomial_interval(n + 1, n)


def test_nll_by_position_matches_a_direct_computation():
    "Per window and averaged, against cross-entropy computed one window at a time."
    torch.manual_seed(0)
    model = Llama(preset("tiny", vocab_size=64, max_seq_len=32)).eval()
    windows = torch.randint(0, 64, (3, 21))
    rows = nll_by_position(model, windows, per_window=True)
    with torch.no_grad():
        for i, w in enumerate(windows):
            logits = model(w[None, :-1])[0]
            direct = torch.nn.functional.cross_entropy(logits, w[1:], reduction="none")
            torch.testing.assert_close(torch.from_numpy(rows[i]), direct, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(nll_by_position(model, windows)), torch.from_numpy(rows.mean(0)))
