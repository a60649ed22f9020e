"""Benchmark: training throughput of the course's Llama (chapter 07) against transformers' LlamaForCausalLM, in one run.

Both models get the same configuration (by default the 349M `350m` preset: hidden 1024, 24 layers, 16 heads,
8 KV heads, FFN 2816, vocabulary 32,000), the same weights (ours copied into transformers' layout with
`llmcourse.model.hf_name`), the same random token batches, bf16 weights, fused AdamW and the same loss (cross
entropy over float32 logits). Before timing, the script checks that both compute the same loss on the same
weights and batch (ours also through the chunked loss). Then each variant trains `--steps` timed steps after
`--warmup` untimed ones.

Variants are named `<hf|ours>_<eager|compiled>[_flag...]` (see `parse_variant`); the default set is

- hf_eager, hf_compiled: LlamaForCausalLM (SDPA attention), without and with torch.compile of the model;
- hf_compiled_loss: its model and the cross entropy compiled as one function;
- ours_eager, ours_compiled: `llmcourse.model.Llama` with chapter 09's `token_losses`, eager and with the model compiled;
- ours_compiled_loss: `token_losses` compiled, model and loss in one graph: what the trainer runs with compile=True;
- ours_eager_chunked, ours_compiled_loss_chunked: with chapter 09's chunked cross-entropy (4,096 tokens a chunk).

Other flags measure one change each: block (compile each decoder block only), flash / cudnn (SDPA restricted to
one kernel), foreach (AdamW without fused=True), cudagraphs (mode 'reduce-overhead'), autocast (float32 weights
under bf16 autocast, the trainer's precision='bf16'), b<N> (batch N).

It prints tokens/s, MFU (6N + attention FLOPs per token, `flops_per_token`, against the device's dense bf16
peak) and peak memory per variant, and the ratios of ours against hf_eager and hf_compiled. Usage (from the
repository root, on a CUDA GPU):

    python bench/train_throughput.py [--preset 350m] [--batch 16] [--seq 2048] [--steps 20] [--json out.json]

`--device cpu --preset tiny --batch 2 --seq 64 --steps 2 --dtype float32` runs it as a smoke test on a CPU.
"""
from __future__ import annotations

import argparse, contextlib, gc, json, platform, sys, time

import torch
import torch.nn.functional as F

from llmcourse.model import Llama, flops_per_token, hf_config, hf_name, preset
from llmcourse.training import peak_flops, token_losses


def hf_model(cfg, device, dtype):
    "transformers' LlamaForCausalLM with this configuration (SDPA attention)."
    from transformers import LlamaConfig, LlamaForCausalLM
    d = {k: v for k, v in hf_config(cfg).items() if k not in ("architectures", "model_type", "torch_dtype")}
    hf_cfg = LlamaConfig(**d); hf_cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(hf_cfg).to(device=device, dtype=dtype)


def build(kind: str, cfg, weights: dict, device, dtype):
    "A model of `kind` ('ours' or 'hf') holding exactly `weights` (our names), and its forward returning logits."
    if kind == "ours":
        m = Llama(cfg).to(device=device, dtype=dtype); m.load_state_dict(weights)
        return m, lambda model, x: model(x)
    m = hf_model(cfg, device, dtype)
    missing, unexpected = m.load_state_dict({hf_name(k): v for k, v in weights.items()}, strict=False)
    if [k for k in missing if not k.endswith("rotary_emb.inv_freq")] or unexpected: raise RuntimeError(f"weights do not map: {missing[:3]} {unexpected[:3]}")
    return m, lambda model, x: model(input_ids=x).logits


def loss_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())


def batches(cfg, batch: int, seq: int, device, n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        t = torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=g)
        out.append((t[:, :-1].to(device), t[:, 1:].to(device)))
    return out


def same_loss(cfg, weights, device, dtype, batch) -> dict:
    "Loss of both models on the same weights and batch (no training); ours also through the chunked cross-entropy."
    x, y = batch
    res = {}
    for kind in ("ours", "hf"):
        m, fwd = build(kind, cfg, weights, device, dtype)
        with torch.no_grad():
            if kind == "hf": res["hf"] = loss_of(fwd(m, x), y).item()
            else: res["ours"], res["ours_chunked"] = (token_losses(m, x, y, c).mean().item() for c in (0, 4096))
        del m; gc.collect()
    res["abs_diff"] = max(abs(res["ours"] - res["hf"]), abs(res["ours_chunked"] - res["hf"]))
    return res


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize(device)


DEFAULT_VARIANTS = ["hf_eager", "hf_compiled", "hf_compiled_loss", "ours_eager", "ours_compiled", "ours_compiled_loss", "ours_eager_chunked",
                    "ours_compiled_loss_chunked"]
FLAGS = {"eager", "compiled", "loss", "block", "chunked", "flash", "cudnn", "foreach", "cudagraphs", "autocast"}


def parse_variant(name: str) -> dict:
    """What a variant name asks for: `<hf|ours>_<eager|compiled>[_flag...]`. Flags:
    loss (the model and the loss compiled as one function: ours is chapter 09's `token_losses`, what the trainer
    compiles), block (compile each decoder block only), chunked (chapter 09's chunked cross-entropy, 4,096 tokens a
    chunk), flash / cudnn (SDPA restricted to one kernel), foreach (AdamW without fused=True), cudagraphs
    (torch.compile mode 'reduce-overhead'), autocast (float32 weights + bf16 autocast, the trainer's precision='bf16'),
    b<N> (batch N instead of --batch)."""
    parts = name.split("_")
    kind, rest = parts[0], parts[1:]
    batch = next((int(f[1:]) for f in rest if f[0] == "b" and f[1:].isdigit()), None)
    flags = {f for f in rest if not (f[0] == "b" and f[1:].isdigit())}
    if kind not in ("hf", "ours") or not flags <= FLAGS or not flags & {"eager", "compiled"}:
        raise SystemExit(f"unknown variant {name!r}: expected hf|ours, then eager|compiled, then flags from {sorted(FLAGS - {'eager', 'compiled'})} or b<batch>")
    if kind == "hf" and flags & {"chunked", "block"}: raise SystemExit(f"{name}: 'chunked' and 'block' are for our model only")
    if "chunked" in flags and "compiled" in flags and "loss" not in flags: raise SystemExit(f"{name}: a compiled chunked loss needs 'loss' (the loss calls model.hidden)")
    return {"kind": kind, "flags": flags, "batch": batch}


def run_variant(name: str, cfg, weights, device, dtype, data, warmup: int, steps: int) -> dict:
    "Train one variant; tokens/s over the timed steps, MFU, peak memory, and its losses."
    v = parse_variant(name); f = v["flags"]
    torch._dynamo.reset()                                            # compile each variant afresh: no graph traced under another variant's settings
    if v["batch"]: data = batches(cfg, v["batch"], data[0][0].shape[1], device, n=len(data))
    w_dtype = torch.float32 if "autocast" in f else dtype
    model, fwd = build(v["kind"], cfg, {k: t.to(w_dtype) for k, t in weights.items()}, device, w_dtype)
    mode = "reduce-overhead" if "cudagraphs" in f else None
    compiled = "compiled" in f
    if v["kind"] == "ours":
        chunk = 4096 if "chunked" in f else 0
        loss_fn = lambda m, x, y: token_losses(m, x, y, chunk).mean()
    else:
        loss_fn = lambda m, x, y: loss_of(fwd(m, x), y)
    run = model
    if compiled and "block" in f:
        for b in model.layers: b.compile(mode=mode)
    elif compiled and "loss" not in f: run = torch.compile(model, mode=mode)
    if compiled and "loss" in f: loss_fn = torch.compile(loss_fn, mode=mode)   # the model and the loss in one graph: logits never kept in float32
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device.type == "cuda" and "foreach" not in f, foreach="foreach" in f or None)
    kernels = [k for k in ("flash", "cudnn") if k in f]
    ctx = contextlib.nullcontext
    if kernels:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        ctx = lambda: sdpa_kernel([{"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[kernels[0]]])
    cast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if "autocast" in f else contextlib.nullcontext
    if device.type == "cuda": torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(device)
    losses, t_compile = [], time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup: sync(device); t0 = time.perf_counter()
        x, y = data[i % len(data)]
        if "cudagraphs" in f: torch.compiler.cudagraph_mark_step_begin()
        with ctx(), cast(): loss = loss_fn(run, x, y)
        loss.backward()
        opt.step(); opt.zero_grad(set_to_none=True)
        if i == 0: sync(device); t_compile = time.perf_counter() - t_compile
        losses.append(loss.detach().clone())
    sync(device); dt = time.perf_counter() - t0
    tokens = steps * data[0][0].numel()
    tps = tokens / dt
    peak = peak_flops(device)
    out = {"variant": name, "batch": data[0][0].shape[0], "tokens_per_s": tps, "step_ms": 1000 * dt / steps, "first_step_s": t_compile,
           "mfu": flops_per_token(cfg, data[0][0].shape[1]) * tps / peak if peak else None,
           "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
           "losses": [round(float(l), 4) for l in losses]}
    return out                                                       # (its models are freed by the caller's gc.collect)


def save(path, dev_name, a, check, rows):
    with open(path, "w") as f: json.dump({"device": dev_name, "torch": torch.__version__, "args": vars(a), "same_loss": check, "runs": rows}, f, indent=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="350m"); p.add_argument("--batch", type=int, default=16); p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--steps", type=int, default=20); p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"]); p.add_argument("--device", default="cuda")
    p.add_argument("--variants", nargs="*", default=DEFAULT_VARIANTS, help="see parse_variant; default: " + " ".join(DEFAULT_VARIANTS))
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    for v in a.variants: parse_variant(v)                            # a typo fails now, not after ten minutes of timing
    device, dtype = torch.device(a.device), getattr(torch, a.dtype)
    if device.type == "cuda" and not torch.cuda.is_available(): sys.exit("no CUDA device: run on a GPU, or pass --device cpu for a smoke test")
    torch.manual_seed(0)
    cfg = preset(a.preset, max_seq_len=max(a.seq, 2048 if a.preset != "tiny" else a.seq))
    weights = {k: v.to(dtype) for k, v in Llama(cfg).state_dict().items()}
    data = batches(cfg, a.batch, a.seq, device, n=max(4, a.warmup + a.steps))
    n_params = sum(v.numel() for v in weights.values())
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"{dev_name}, torch {torch.__version__}; {a.preset}: {n_params / 1e6:.1f}M parameters, batch {a.batch} x {a.seq}, {a.dtype}")
    check = same_loss(cfg, weights, device, dtype, data[0])
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    print(f"same weights, same batch: loss ours {check['ours']:.5f} (chunked {check['ours_chunked']:.5f}), transformers {check['hf']:.5f} "
          f"(max |diff| {check['abs_diff']:.2e}, tolerance {tol:g})")
    if check["abs_diff"] > tol: sys.exit("the two models do not compute the same loss: not timing them")
    rows = []
    for v in a.variants:
        r = run_variant(v, cfg, weights, device, dtype, data, a.warmup, a.steps); rows.append(r); gc.collect()
        if device.type == "cuda": torch.cuda.empty_cache()
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_mem_gib']:.1f} GiB" if r["peak_mem_gib"] is not None else "n/a"
        print(f"{v:28s} {r['tokens_per_s']:>12,.0f} tokens/s  {r['step_ms']:8.1f} ms/step  MFU {mfu:>6s}  peak {mem:>9s}  first step {r['first_step_s']:.1f} s", flush=True)
        if a.json: save(a.json, dev_name, a, check, rows)              # after every variant: a cut-off run keeps what it measured
    by = {r["variant"]: r for r in rows}
    for ref in ("hf_eager", "hf_compiled"):
        if ref in by:
            print(f"against {ref}: " + ", ".join(f"{r['variant']} {r['tokens_per_s'] / by[ref]['tokens_per_s']:.2f}x" for r in rows if r["variant"].startswith("ours")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
