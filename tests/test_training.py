"Training in a separate process: kill -9 at random moments and resume exactly; spikes and NaNs roll back."
import json, math, os, random, signal, subprocess, time
from pathlib import Path

import pytest

from llmcourse.core import save_config
from llmcourse.data import tokenize_to_shards
from llmcourse.tokenizer import Tokenizer, tokenizer_corpus, train_bpe
from llmcourse.training import TrainConfig, read_metrics, train


@pytest.fixture(scope="module")
def shards(tmp_path_factory, repo_root):
    "Token shards of a small slice of the sample corpus, with a 1,024-entry tokenizer."
    work = tmp_path_factory.mktemp("data")
    docs = [d for d in tokenizer_corpus(repo_root / "data_samples", 0) if not d["heldout"]][::4]
    tok = Tokenizer(*train_bpe([d["text"] for d in docs], 1024, ["<|endoftext|>"]), ["<|endoftext|>"])
    path = tok.save(work / "tokenizer.json")
    tokenize_to_shards(docs, path, work / "train", workers=1)
    return work / "train"


def _config(shards, out, **kw) -> TrainConfig:
    base = dict(shards=str(shards), out=str(out), model="tiny", model_overrides={"dim": 64, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1},
                seq_len=64, batch_size=4, max_steps=60, lr=3e-3, warmup_steps=5, ckpt_every=5, keep_checkpoints=2, log_every=10,
                eval_every=0, threads=1, tensorboard=False, seed=0, device="cpu")
    return TrainConfig(**(base | kw))


def _train_cmd(llmcourse_exe, cfg_path):
    return [llmcourse_exe, "train", "--config", str(cfg_path)]


def _losses(out):
    return [(r["step"], r["loss"]) for r in read_metrics(out) if "event" not in r]


def test_kill9_resume_equals_uninterrupted(shards, tmp_path, llmcourse_exe):
    ref_cfg = tmp_path / "ref.json"; save_config(_config(shards, tmp_path / "ref"), ref_cfg)
    r = subprocess.run(_train_cmd(llmcourse_exe, ref_cfg), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    reference = _losses(tmp_path / "ref")
    assert [s for s, _ in reference] == list(range(1, 61))

    cfg_path = tmp_path / "killed.json"; save_config(_config(shards, tmp_path / "killed"), cfg_path)
    rng, kills = random.Random(0), 0
    while kills < 3:                                    # kill -9 three times, at random moments after some progress
        p = subprocess.Popen(_train_cmd(llmcourse_exe, cfg_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = rng.randint(8, 50)
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None:
            m = tmp_path / "killed" / "metrics.jsonl"
            done = [json.loads(l)["step"] for l in m.read_text().splitlines() if l] if m.exists() else []
            if done and done[-1] >= target: break
            time.sleep(0.02)
        if p.poll() is not None: break                  # finished before we could kill it
        os.kill(p.pid, signal.SIGKILL); p.wait(); kills += 1
    r = subprocess.run(_train_cmd(llmcourse_exe, cfg_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert kills == 3
    assert not list((tmp_path / "killed").glob("*.tmp"))          # no half-written checkpoint left behind as a checkpoint
    assert _losses(tmp_path / "killed") == reference               # exactly the same curve, float for float


def test_spike_and_nan_roll_back_and_recover(shards, tmp_path, llmcourse_exe):
    cfg_path = tmp_path / "faulty.json"
    save_config(_config(shards, tmp_path / "faulty", inject={"corrupt": [50], "nan": [55]}, spike_warmup=10), cfg_path)
    r = subprocess.run(_train_cmd(llmcourse_exe, cfg_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["rollbacks"] == 2
    events = [e for e in read_metrics(tmp_path / "faulty") if "event" in e]
    assert [e["skipped_batches"] for e in events] == [[50], [55]]
    assert all(e["rolled_back_to"] % 5 == 0 and e["rolled_back_to"] < e["at_step"] <= e["rolled_back_to"] + 5 for e in events)
    assert events[1]["loss"] is None                                 # the NaN
    losses = _losses(tmp_path / "faulty")
    assert [s for s, _ in losses] == list(range(1, 61)) and all(l == l and l < 20 for _, l in losses)
    import torch
    ck = torch.load(tmp_path / "faulty" / "ckpt_0000060.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_doc_mask_training(shards, tmp_path):
    "TrainConfig(doc_mask=True) feeds the packed batches' doc_ids and restarted positions to the model, and trains."
    from llmcourse.training import train
    runs = {}
    for mask in (False, True):
        train(_config(shards, tmp_path / str(mask), max_steps=30, ckpt_every=0, log_every=1, doc_mask=mask))
        runs[mask] = _losses(tmp_path / str(mask))
    first = {m: losses[0][1] for m, losses in runs.items()}
    assert first[True] != first[False]                                  # same batch and weights: the mask changed the forward
    last = {m: sum(l for _, l in losses[-5:]) / 5 for m, losses in runs.items()}
    assert all(math.isfinite(l) for _, l in runs[True]) and last[True] < first[True] - 0.4   # it learns
    assert abs(last[True] - last[False]) < 0.3                          # about as fast as without the mask


def test_chunked_and_compiled_loss_train_like_eager(shards, tmp_path):
    "loss_chunk (the chunked cross-entropy) and compile=True (model and loss as one compiled function) give the eager run's losses and weights."
    import torch
    from llmcourse.training import load_checkpoint, train
    runs = {"eager": {}, "chunked": {"loss_chunk": 100}, "compiled_chunked": {"loss_chunk": 100, "compile": True}}
    res = {}
    for name, kw in runs.items():                       # 4 x 64 = 256 tokens per batch: chunks of 100, 100 and 56
        out = tmp_path / name
        train(_config(shards, out, max_steps=12, ckpt_every=0, log_every=1, doc_mask=True, heldout_shards=str(shards), eval_every=6, **kw))
        rec = read_metrics(out)
        res[name] = ([r["loss"] for r in rec], [r["eval_loss"] for r in rec if "eval_loss" in r], load_checkpoint(out)["model"])
    ref_loss, ref_eval, ref_w = res["eager"]
    assert len(ref_loss) == 12 and len(ref_eval) == 2
    for name in ("chunked", "compiled_chunked"):
        loss, ev, w = res[name]
        assert max(abs(a - b) for a, b in zip(loss, ref_loss)) < 1e-4, (name, loss, ref_loss)
        assert max(abs(a - b) for a, b in zip(ev, ref_eval)) < 1e-4, (name, ev, ref_eval)
        # AdamW divides by sqrt(v): where a gradient is tiny, a rounding difference in the summation order becomes
        # a visible share of one step (lr = 3e-3); a wrong gradient would move the losses above by far more
        assert max((w[k] - ref_w[k]).abs().max().item() for k in ref_w) < 1e-3, name
    assert ref_loss[-1] < ref_loss[0] - 0.05                            # the runs moved: the equalities are not of idle models


def test_health_alerts_fire_on_faults_and_survive_a_resume(shards, tmp_path):
    "A frozen block is reported at the first logging step; a zero-lr run stopped and resumed raises the alerts of a run straight through."
    frozen = _config(shards, tmp_path / "frozen", max_steps=20, inject={"freeze": ["layers.1"]})
    train(frozen)
    alerts = [r for r in read_metrics(tmp_path / "frozen") if r.get("event") == "alert"]
    assert {(a["step"], a["check"], a["where"]) for a in alerts} == {(10, "grad_vanished", "layers.1"), (10, "update_ratio", "layers.1")}
    clean = _config(shards, tmp_path / "clean", max_steps=20)
    train(clean)
    assert not [r for r in read_metrics(tmp_path / "clean") if r.get("event") == "alert"]
    kw = dict(lr=0.0, health={"stall_window": 8}, ckpt_every=5)
    train(_config(shards, tmp_path / "straight", max_steps=40, **kw))
    train(_config(shards, tmp_path / "resumed", max_steps=25, **kw))
    train(_config(shards, tmp_path / "resumed", max_steps=40, **kw), override=True)  # max_steps changed: said so

    def found(out):
        return [(r["step"], r["check"], r["where"], r["value"]) for r in read_metrics(out) if r.get("event") == "alert"]

    assert found(tmp_path / "straight") and any(a[1] == "loss_stalled" for a in found(tmp_path / "straight"))
    assert found(tmp_path / "resumed") == found(tmp_path / "straight")


def _kill_at(llmcourse_exe, cfg_path, out, targets):
    "Run `llmcourse train` and kill -9 it once its metrics reach each target step in turn; then let a run finish."
    kills = 0
    for target in targets:
        p = subprocess.Popen(_train_cmd(llmcourse_exe, cfg_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None:
            done = [r["step"] for r in read_metrics(out) if "event" not in r] if (out / "metrics.jsonl").exists() else []
            if done and done[-1] >= target: break
            time.sleep(0.02)
        if p.poll() is not None: break
        os.kill(p.pid, signal.SIGKILL); p.wait(); kills += 1
    r = subprocess.run(_train_cmd(llmcourse_exe, cfg_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return kills


STAGES = [{"name": "web", "tokens": 30 * 4 * 64, "shares": {"web/en": 1, "web/zh": 1}},
          {"name": "facts", "tokens": 30 * 4 * 64, "shares": {"knowledge/en": 1, "math/en": 1}}]
GROUPS = ["code/python", "knowledge/en", "knowledge/zh", "math/en", "math/zh", "web/en", "web/zh"]   # the fixture's


@pytest.mark.parametrize("kind", ["curriculum", "reweight"])
def test_kill9_in_a_changing_mixture_resumes_exactly(shards, tmp_path, llmcourse_exe, kind):
    "kill -9 just after a curriculum boundary (resumed from the checkpoint before it) and inside stage 2, or during a re-weighted run: the same steps, stages and weights as a run never stopped."
    kw = ({"curriculum": STAGES} if kind == "curriculum" else
          {"reweight": {"reference": {g: 20.0 if g == "web/zh" else 3.0 for g in GROUPS}, "every": 5, "step_size": 0.5}})
    runs = {}
    for name in ("straight", "killed"):
        cfg_path = tmp_path / f"{name}.json"
        save_config(_config(shards, tmp_path / name, log_every=1, **kw), cfg_path)
        runs[name] = tmp_path / name
        kills = _kill_at(llmcourse_exe, cfg_path, tmp_path / name, [] if name == "straight" else [33, 46])
    assert kills == 2

    def history(out):   # per step: loss, the groups in its batch, the weights; and the stage events
        recs = read_metrics(out)
        steps = [(r["step"], r["loss"], sorted(k[5:] for k in r if k.startswith("loss/")),
                  {k: v for k, v in r.items() if k.startswith("weight/")}) for r in recs if "event" not in r]
        return steps, [(r["step"], r["stage"]) for r in recs if r.get("event") == "curriculum_stage"]

    straight, killed = history(runs["straight"]), history(runs["killed"])
    assert [s for s, *_ in straight[0]] == list(range(1, 61))
    assert killed == straight                                       # float for float, stage for stage
    if kind == "curriculum":
        assert straight[1] == [(1, "web"), (31, "facts")]
        assert {g for _, _, gs, _ in straight[0][:30] for g in gs} == {"web/en", "web/zh"}
        assert {g for _, _, gs, _ in straight[0][30:] for g in gs} == {"knowledge/en", "math/en"}
    else:
        weights = [w for *_, w in straight[0] if w]
        assert len(weights) == 12 and weights[0] != weights[-1]    # updated every 5 steps, and moving
        assert all(abs(sum(w.values()) - 1) < 1e-4 for w in weights)
        # web/zh's loss never exceeds its reference of 20 nats: no excess, so it sinks towards the smoothing floor
        assert min(weights[-1], key=weights[-1].get) == "weight/web/zh" and weights[-1]["weight/web/zh"] < 1 / len(GROUPS)


def test_noise_scale_estimates_equal_the_micro_batch_gradients(shards, tmp_path):
    "The logged |G|² and tr(Σ) equal the same statistics computed from each micro-batch's own gradient."
    import torch
    from llmcourse.training import Trainer
    k, rows = 3, 2
    cfg = _config(shards, tmp_path / "run", batch_size=rows, grad_accum=k, max_steps=1, noise_scale=True, ckpt_every=0)
    train(cfg)
    logged = [r for r in read_metrics(tmp_path / "run") if "event" not in r][0]
    t = Trainer(_config(shards, tmp_path / "ref", batch_size=rows, grad_accum=k, max_steps=1, ckpt_every=0))
    grads = []
    for _ in range(k):  # the same k batches, each its own backward pass
        _, b = t._next_batch()
        t.model.zero_grad()
        t.loss_fn(t.model, b["input_ids"], b["labels"], 0).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in t.model.parameters()]).double())
    g = torch.stack(grads)
    cross = (g @ g.T).sum() - (g * g).sum()  # Σ over i ≠ j of g_i · g_j
    spread = ((g - g.mean(0)) ** 2).sum() / (k - 1)  # the sample variance of a micro-batch's gradient (trace)
    assert math.isclose(logged["gns_grad_sq"], (cross / (k * (k - 1))).item(), rel_tol=1e-4)
    assert math.isclose(logged["gns_trace"], (spread * rows * 64).item(), rel_tol=1e-4)
    assert logged["gns_grad_sq"] > 0 and logged["gns_trace"] > 0
    with pytest.raises(ValueError, match="grad_accum >= 2"):
        _config(shards, tmp_path / "bad", noise_scale=True).validate()
