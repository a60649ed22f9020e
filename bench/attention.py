"""Benchmark: chapter 08's Triton FlashAttention-2 against PyTorch's attention kernels, in one run.

Every method computes causal attention on the same bfloat16 inputs (B, H, T, d), with B·T = 16,384 tokens
and H·d = 2048 (16 heads of 128, or 32 heads of 64), for T = 1k..16k:

- triton: `llmcourse.attention.flash_attention` (our forward and backward kernels);
- sdpa_flash, sdpa_cudnn, sdpa_efficient, sdpa_math: `torch.nn.functional.scaled_dot_product_attention`
  with only that kernel allowed (`torch.nn.attention.sdpa_kernel`);
- naive: `llmcourse.attention.naive_attention`, the T x T reference (float32 scores).

Speed is TFLOP/s with FLOPs counted by chapter 07's `llmcourse.model.attention_flops`, the course's one definition:
4·B·H·T²·d forward, halved for causal, x3 for forward + backward (the backward's four matmuls; the FlashAttention
papers count x3.5, adding the recomputed q·kᵀ, so their forward + backward figures are 3.5/3 of ours); time is the median of CUDA-event-timed repeats after
warm-up. The T x T methods run up to --max-quadratic tokens. Memory is the peak GPU memory of one forward +
backward pass (B = 1, 16 heads of 128) above the inputs. Before timing, each method's output is checked
against sdpa_math in float32 on a small input. Ratios are printed against sdpa_flash, measured in the same
run. Usage (from the repository root, on a CUDA GPU):

    python bench/attention.py [--json out.json] [--lengths 1024 2048 4096 8192 16384]
"""
from __future__ import annotations

import argparse, json, platform, statistics, sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from llmcourse.attention import SDPA_KERNELS, flash_attention, naive_attention
from llmcourse.model import attention_flops


def methods() -> dict:
    "name -> fn(q, k, v) computing causal attention."
    out = {"triton": lambda q, k, v: flash_attention(q, k, v, causal=True)}
    for name, kern in SDPA_KERNELS.items():
        def run(q, k, v, kern=kern):
            with sdpa_kernel(kern): return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out[name] = run
    out["naive"] = lambda q, k, v: naive_attention(q, k, v, causal=True)[0]
    return out


def time_ms(fn, warmup: int = 5, repeat: int = 20) -> float:
    "Median milliseconds of fn(), CUDA events around each call."
    for _ in range(warmup): fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def inputs(B, H, T, d, grad=False):
    g = torch.Generator(device="cuda").manual_seed(T + d)
    return [torch.randn(B, H, T, d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_(grad) for _ in range(3)]


def check_outputs(ms: dict) -> dict:
    "Max abs difference of each method's output from sdpa_math in float32 (T=512, d=64, bf16 inputs)."
    q, k, v = inputs(2, 8, 512, 64)
    with sdpa_kernel(SDPBackend.MATH): ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    return {name: (fn(q, k, v).float() - ref).abs().max().item() for name, fn in ms.items()}


def speed(ms: dict, lengths: list[int], dims: list[int], max_quadratic: int) -> list[dict]:
    rows = []
    for d in dims:
        for T in lengths:
            B, H = max(1, 16384 // T), 2048 // d
            for mode in ("fwd", "fwd+bwd"):
                q, k, v = inputs(B, H, T, d, grad=mode != "fwd")
                do = torch.randn_like(q)
                for name, fn in ms.items():
                    row = {"d": d, "T": T, "B": B, "H": H, "mode": mode, "method": name, "ms": None, "tflops": None}
                    if name in ("naive", "sdpa_math") and T > max_quadratic: row["error"] = "skipped (T x T too large)"
                    else:
                        call = (lambda: fn(q, k, v)) if mode == "fwd" else (lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), do))
                        try:
                            with torch.no_grad() if mode == "fwd" else torch.enable_grad():
                                t = time_ms(call)
                            row["ms"], row["tflops"] = t, attention_flops(B, H, T, d, True, mode != "fwd") / t / 1e9
                        except (RuntimeError, torch.OutOfMemoryError) as e: row["error"] = str(e).strip().splitlines()[0][:120]
                        torch.cuda.empty_cache()
                    rows.append(row)
                    print(f"d={d:3d} T={T:5d} {mode:7s} {name:14s} " + (f"{row['tflops']:6.1f} TFLOP/s" if row["tflops"] else row.get("error", "")),
                          file=sys.stderr, flush=True)
                q = k = v = do = None                            # free before the next shape
    return rows


def memory(ms: dict, lengths: list[int], max_quadratic: int) -> list[dict]:
    rows = []
    for T in lengths:
        for name in ("triton", "sdpa_flash", "sdpa_cudnn", "naive"):
            row = {"T": T, "method": name, "peak_mib": None}
            if name == "naive" and T > max_quadratic: row["error"] = "skipped"; rows.append(row); continue
            q, k, v = inputs(1, 16, T, 128, grad=True)
            torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            try:
                torch.autograd.grad(ms[name](q, k, v), (q, k, v), torch.ones_like(q))
                torch.cuda.synchronize(); row["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
            except (RuntimeError, torch.OutOfMemoryError) as e: row["error"] = str(e).strip().splitlines()[0][:120]
            del q, k, v; torch.cuda.empty_cache(); rows.append(row)
    return rows


def table(rows: list[dict], d: int, mode: str, names: list[str]) -> str:
    lines = ["| T | " + " | ".join(names) + " | triton / sdpa_flash |", "|---:|" + "---:|" * (len(names) + 1)]
    for T in sorted({r["T"] for r in rows}):
        got = {r["method"]: r["tflops"] for r in rows if r["d"] == d and r["mode"] == mode and r["T"] == T}
        ratio = got["triton"] / got["sdpa_flash"] if got.get("triton") and got.get("sdpa_flash") else None
        cells = " | ".join(f"{got[n]:.0f}" if got.get(n) else "–" for n in names)
        lines.append(f"| {T} | {cells} | " + (f"{ratio:.2f}x |" if ratio else "– |"))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--dims", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--max-quadratic", type=int, default=8192, help="longest T for the T x T methods")
    ap.add_argument("--json", help="write every measurement here")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available(): sys.exit("bench/attention.py measures GPU kernels: it needs a CUDA GPU")
    ms = methods()
    device = torch.cuda.get_device_name()
    print(f"device: {device}, torch {torch.__version__}, triton {__import__('triton').__version__}, {platform.machine()}")
    err = check_outputs(ms)
    print("max |output - sdpa_math fp32| at T=512, d=64, bf16:", ", ".join(f"{k} {v:.1e}" for k, v in err.items()))
    rows = speed(ms, a.lengths, a.dims, a.max_quadratic)
    mem = memory(ms, a.lengths, a.max_quadratic)
    names = list(ms)
    for d in a.dims:
        for mode in ("fwd", "fwd+bwd"):
            print(f"\nTFLOP/s, {mode}, head dim {d}, causal, bf16, {device}\n" + table(rows, d, mode, names))
    print(f"\nPeak memory of one forward + backward (MiB above the inputs), B=1, 16 heads of 128, {device}")
    mem_names = list(dict.fromkeys(r["method"] for r in mem))
    print("| T | " + " | ".join(mem_names) + " |\n|---:|" + "---:|" * len(mem_names))
    for T in a.lengths:
        print(f"| {T} | " + " | ".join(f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "–" for r in mem if r["T"] == T) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": device, "torch": torch.__version__, "triton": __import__("triton").__version__,
                       "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
                       "flops": "llmcourse.model.attention_flops (causal at half, backward 2x forward)",
                       "methods": names, "check": err, "speed": rows, "memory": mem}, f, indent=1)


if __name__ == "__main__":
    main()
