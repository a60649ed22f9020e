"Chapter 08's kernels beyond the notebook: random shapes through Triton's interpreter, LSE merging, the flash_attn backend, doc-masked training."
import math

import pytest
import torch

from llmcourse.attention import flash_attention, flash_attn_available, naive_attention
from llmcourse.model import ATTENTION_BACKENDS


DEV = "cuda" if torch.cuda.is_available() else "cpu"   # on a CPU the kernels run in Triton's interpreter
ATOL = 2e-5 if DEV == "cpu" else 2e-2                  # on a GPU, tl.dot rounds float32 inputs to TF32


def _rand(g, *shape): return torch.randn(*shape, generator=g).to(DEV)


@pytest.mark.parametrize("seed", range(6))
def test_triton_matches_float64_reference_on_random_shapes(seed):
    "Fresh random shape, mask and head grouping per seed; forward, lse and the three gradients within float32 rounding."
    g = torch.Generator().manual_seed(100 + seed)
    r = lambda lo, hi: int(torch.randint(lo, hi, (1,), generator=g))
    B, Hkv, group, d = r(1, 3), r(1, 3), r(1, 4), [16, 32][r(0, 2)]
    Tk = r(5, 70); Tq = Tk if seed % 3 else r(1, Tk + 1)
    causal = seed % 2 == 0
    q, k, v = _rand(g, B, Hkv * group, Tq, d), _rand(g, B, Hkv, Tk, d), _rand(g, B, Hkv, Tk, d)
    doc = None
    if Tq == Tk and seed % 3 == 1:                                     # packed documents
        doc = torch.cumsum(torch.rand(B, Tq, generator=g) < 0.1, 1).to(DEV); doc[:, 0] = 0
    do = _rand(g, B, Hkv * group, Tq, d)
    ins = [t.clone().requires_grad_() for t in (q, k, v)]
    o, lse = flash_attention(*ins, causal=causal, doc_ids=doc, return_lse=True)
    grads = torch.autograd.grad(o, ins, do)
    ref = [t.double().requires_grad_() for t in (q, k, v)]
    o_ref, lse_ref = naive_attention(*ref, causal=causal, doc_ids=doc)
    ref_grads = torch.autograd.grad(o_ref, ref, do.double())
    for got, want in zip((o, lse, *grads), (o_ref, lse_ref, *ref_grads)):
        torch.testing.assert_close(got.double(), want.double(), atol=ATOL, rtol=1e-4)


def test_two_halves_merge_with_their_lse():
    "What ring attention relies on: attention over two key halves, merged by their log-sum-exps, equals attention over all keys."
    g = torch.Generator().manual_seed(7)
    q, k, v = _rand(g, 2, 4, 24, 32), _rand(g, 2, 2, 40, 32), _rand(g, 2, 2, 40, 32)
    o1, l1 = flash_attention(q, k[:, :, :17], v[:, :, :17], causal=False, return_lse=True)
    o2, l2 = flash_attention(q, k[:, :, 17:], v[:, :, 17:], causal=False, return_lse=True)
    lse = torch.logaddexp(l1, l2)
    merged = o1 * (l1 - lse).exp()[..., None] + o2 * (l2 - lse).exp()[..., None]
    o, lse_full = flash_attention(q, k, v, causal=False, return_lse=True)
    torch.testing.assert_close(merged, o, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(lse, lse_full, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(lse_full[0, 0, 0], (q[0, 0, 0] @ k[0, 0].T / math.sqrt(32)).logsumexp(0), atol=ATOL, rtol=1e-5)


def test_bad_input_is_named():
    q = torch.randn(1, 2, 8, 24, device=DEV)
    with pytest.raises(ValueError, match="power of two"): flash_attention(q, q, q)
    q = torch.randn(1, 3, 8, 16, device=DEV); k = torch.randn(1, 2, 8, 16, device=DEV)
    with pytest.raises(ValueError, match="cannot share"): flash_attention(q, k, k)
    q = torch.randn(1, 2, 9, 16, device=DEV); k = torch.randn(1, 2, 8, 16, device=DEV)
    with pytest.raises(ValueError, match="Tq <= Tk"): flash_attention(q, k, k)
    with pytest.raises(ValueError, match="doc_ids must be"): flash_attention(k, k, k, doc_ids=torch.zeros(1, 5, dtype=torch.long, device=DEV))


def test_flash_attn_backend():
    "The optional FlashAttention package: used when importable; otherwise skipped with the reason."
    reason = flash_attn_available()
    if reason is not None: pytest.skip(f"flash_attn backend not available here: {reason}")
    assert "flash_attn" in ATTENTION_BACKENDS
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 256, 64, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    doc = (torch.arange(256, device="cuda") >= 100).long().expand(2, 256)
    for docs in (None, doc):
        torch.testing.assert_close(ATTENTION_BACKENDS["flash_attn"](q, k, v, True, doc_ids=docs),
                                   naive_attention(q, k, v, True, docs)[0], atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(DEV == "cuda", reason="the interpreter path is the CPU path")
def test_kernels_run_when_triton_was_imported_first(tmp_path):
    "transformers imports triton.language (compiled mode) before this module can ask for the interpreter; the kernels must still run."
    import subprocess, sys
    code = ("from transformers import LlamaForCausalLM\nimport torch\nfrom llmcourse.attention import flash_attention, naive_attention\n"
            "torch.manual_seed(0)\nq = torch.randn(1, 2, 40, 16, requires_grad=True)\no = flash_attention(q, q, q); o.sum().backward()\n"
            "err = (o - naive_attention(q, q, q)[0]).abs().max().item()\nassert err < 1e-4 and q.grad is not None, err\nprint('ok')")
    # float32 online softmax against the naive product: runs of this check have differed by up to 6.3e-5
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
