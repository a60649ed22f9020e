"Chapter 10 on the CPU: 2 and 4 gloo processes (forked by run_ranks) against one process."
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from llmcourse.attention import naive_attention
from llmcourse.distributed import (allgather_attention, context_parallel, cp_batch, cp_loss, fsdp2, full_state, ring_attention,
                                   ring_attention_one_process, ring_kernel, run_ranks, zigzag_shard, zigzag_unshard)
from llmcourse.model import Llama, preset


def _attn_worker(rank, world, name, q, k, v, w, kernel="auto"):
    fn = {"ring": ring_attention, "allgather": allgather_attention}[name]
    ql, kl, vl = (zigzag_shard(t, rank, world).clone().requires_grad_() for t in (q, k, v))
    out = fn(ql, kl, vl, kernel=kernel)
    (out * zigzag_shard(w, rank, world)).sum().backward()
    return out.detach(), ql.grad, kl.grad, vl.grad


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("name", ["ring", "allgather"])
@pytest.mark.parametrize("heads", [(4, 4), (8, 2)])
def test_cp_attention_equals_one_process(world, name, heads):
    g = torch.Generator().manual_seed(world * 10 + heads[1])
    T, (H, Hkv) = 12 * world, heads                                      # chunks of 6 tokens
    q, w = torch.randn(1, H, T, 8, generator=g), torch.randn(1, H, T, 8, generator=g)
    k, v = torch.randn(1, Hkv, T, 8, generator=g), torch.randn(1, Hkv, T, 8, generator=g)
    qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
    o, _ = naive_attention(qq, kk, vv, causal=True); (o * w).sum().backward()
    parts = run_ranks(_attn_worker, world, name, q, k, v, w)
    for got, want in zip(zip(*parts), (o.detach(), qq.grad, kk.grad, vv.grad)):   # output, dq, dk, dv gathered back to full length
        torch.testing.assert_close(zigzag_unshard(list(got)), want, atol=2e-6, rtol=1e-5)


def _reference(q, k, v, w):  # one process: output, dq, dk, dv of sum(attention * w)
    qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
    o, _ = naive_attention(qq, kk, vv, causal=True); (o * w).sum().backward()
    return o.detach(), qq.grad, kk.grad, vv.grad


def _qkvw(seed, H, Hkv, T, d):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, n, T, d, generator=g) for n in (H, Hkv, Hkv, H)]


@pytest.mark.parametrize("name", ["ring", "allgather"])
def test_cp_attention_with_triton_blocks(name):
    "Chapter 08's Triton kernels (Triton's interpreter on a CPU) as the blocks: the same answer as one process."
    q, k, v, w = _qkvw(3, 8, 2, 40, 16)                                  # 2 ranks: chunks of 10 tokens, tiles of 16
    parts = run_ranks(_attn_worker, 2, name, q, k, v, w, "triton")
    for got, want in zip(zip(*parts), _reference(q, k, v, w)):
        torch.testing.assert_close(zigzag_unshard(list(got)), want, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("world", [1, 3])
@pytest.mark.parametrize("kernel", ["reference", "triton"])
def test_ring_in_one_process_equals_attention(world, kernel):
    "The ring's arithmetic for `world` ranks in one process (how one GPU checks it) equals plain attention."
    q, k, v, w = _qkvw(world, 4, 2, 12 * world, 16)
    for got, want in zip(ring_attention_one_process(q, k, v, w, world, kernel), _reference(q, k, v, w)):
        torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)


def test_ring_kernel_choice():
    assert ring_kernel("auto", torch.zeros(1)) == "reference"           # CPU tensors: the float32 reference
    assert ring_kernel("triton", torch.zeros(1)) == "triton"
    with pytest.raises(ValueError, match="unknown block kernel 'flash'"): ring_kernel("flash", torch.zeros(1))


def _model(backend):
    torch.manual_seed(0)
    return Llama(preset("tiny", vocab_size=128, dim=32, n_layers=2, n_heads=4, n_kv_heads=1, max_seq_len=48, attn_backend=backend))


def _cp_worker(rank, world, backend, ids, labels):
    model = torch.nn.parallel.DistributedDataParallel(_model(backend))
    b = cp_batch(ids, labels, rank, world)
    with context_parallel():
        loss = cp_loss(model(b["input_ids"], position_ids=b["position_ids"]), b["labels"], ids.numel(), world)
        loss.backward()
    t = torch.tensor([loss.item() / world]); dist.all_reduce(t)
    return t.item(), {n: p.grad for n, p in model.module.named_parameters()}


@pytest.mark.parametrize("backend,world", [("ring", 2), ("ring", 4), ("allgather", 4)])
def test_cp_model_step_equals_one_process(backend, world):
    g = torch.Generator().manual_seed(5)
    ids, labels = torch.randint(0, 128, (3, 48), generator=g), torch.randint(0, 128, (3, 48), generator=g)
    ref = _model("math")
    loss = F.cross_entropy(ref(ids).flatten(0, 1), labels.flatten()); loss.backward()
    for total, grads in run_ranks(_cp_worker, world, backend, ids, labels):
        assert abs(total - loss.item()) < 1e-5
        for n, p in ref.named_parameters(): torch.testing.assert_close(grads[n], p.grad, atol=1e-6, rtol=1e-4)


def _dp_worker(rank, world, kind, x, y):
    model = _model("math")
    model = torch.nn.parallel.DistributedDataParallel(model) if kind == "ddp" else fsdp2(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    rows = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    F.cross_entropy(model(x[rows]).flatten(0, 1), y[rows].flatten()).backward(); opt.step()
    return full_state(model.module if kind == "ddp" else model)


@pytest.mark.parametrize("kind,world", [("ddp", 2), ("fsdp2", 2), ("fsdp2", 4)])
def test_data_parallel_step_equals_one_process(kind, world):
    g = torch.Generator().manual_seed(7)
    x, y = torch.randint(0, 128, (4, 24), generator=g), torch.randint(0, 128, (4, 24), generator=g)
    ref = _model("math"); opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    F.cross_entropy(ref(x).flatten(0, 1), y.flatten()).backward(); opt.step()
    want = full_state(ref)
    for state in run_ranks(_dp_worker, world, kind, x, y):
        assert set(state) == set(want)
        for n in want: torch.testing.assert_close(state[n], want[n], atol=1e-6, rtol=1e-5)
    assert max((want[n] - full_state(_model("math"))[n]).abs().max().item() for n in want) > 1e-3   # the step moved the weights


def _fails(rank, world):
    if rank == 1: raise ValueError("rank one is unhappy")
    return rank


def test_errors_are_clear():
    with pytest.raises(RuntimeError, match="rank 1 of 2 failed"): run_ranks(_fails, 2)
    with pytest.raises(ValueError, match="multiple of 2·world"): zigzag_shard(torch.zeros(1, 10, 4), 0, 4)
    m = _model("ring")
    with pytest.raises(RuntimeError, match="inside `with context_parallel"): m(torch.zeros(1, 8, dtype=torch.long))
