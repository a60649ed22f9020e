"""`llmcourse train` under torchrun on CPU processes (gloo), as a user starts it: (dp, cp), (dp, tp) and (cp, tp)
meshes, and pipelines of 2 stages (1F1B and GPipe, with dp or tp), train the one-process curve; kill -9 of one rank stops the job
and the rerun resumes; sharded checkpoints resume on another mesh and consolidate into one file; a mesh that does not fit is a
clear error on every rank."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest

from llmcourse.core import save_config
from llmcourse.data import tokenize_to_shards
from llmcourse.tokenizer import Tokenizer, tokenizer_corpus, train_bpe
from llmcourse.training import TrainConfig, branch_run, load_checkpoint, read_metrics, train

TORCHRUN, LLMCOURSE = (str(Path(sys.executable).parent / name) for name in ("torchrun", "llmcourse"))
# float32 sums taken in another order (FSDP's reduce-scatter, the ring's merges) differ in the last bits;
# over 20 AdamW steps the losses measured here stay within 2e-6 of one process: 1e-5 leaves room, and a real
# difference (a wrong gradient, a skipped row) moves them by 1e-3 or more from the second step on
TOL = 1e-5


@pytest.fixture(scope="module")
def config(tmp_path_factory, repo_root):
    "A run config on a small shard set, with held-out shards: 20 steps of 4 rows x 64 tokens."
    work = tmp_path_factory.mktemp("mesh")
    docs = tokenizer_corpus(repo_root / "data_samples", 0)
    train_docs, held = [d for d in docs if not d["heldout"]][::4], [d for d in docs if d["heldout"]][::4]
    tok = Tokenizer(*train_bpe([d["text"] for d in train_docs], 1024, ["<|endoftext|>"]), ["<|endoftext|>"])
    path = tok.save(work / "tokenizer.json")
    tokenize_to_shards(train_docs, path, work / "train", workers=1)
    tokenize_to_shards(held, path, work / "heldout", workers=1)
    cfg = TrainConfig(shards=str(work / "train"), heldout_shards=str(work / "heldout"), out=str(work / "one"),
                      model="tiny", model_overrides={"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2},
                      seq_len=64, batch_size=4, max_steps=20, lr=3e-3, warmup_steps=5, ckpt_every=5, keep_checkpoints=4,
                      log_every=5, eval_every=10, eval_batches=2, threads=1, tensorboard=False, device="cpu",
                      mixture={"web/en": 1, "knowledge/en": 1, "math/en": 1, "code/python": 1})
    save_config(cfg, work / "run.json")
    train(cfg)                                                         # the one-process reference, in this process
    return work


def _torchrun(work, n, out, *flags, wait=True):
    cmd = [TORCHRUN, "--nproc_per_node", str(n), "--no-python", LLMCOURSE, "train", "--config", str(work / "run.json"),
           "--out", str(out), *flags]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def _steps(out):
    return [r for r in read_metrics(out) if "event" not in r]


def _close(run, reference, tol=TOL):
    a, b = _steps(run), _steps(reference)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 21))
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b)) < tol
    evals = [(x["eval_loss"], y["eval_loss"]) for x, y in zip(a, b) if "eval_loss" in y]
    assert len(evals) == 2 and max(abs(x - y) for x, y in evals) < tol
    assert a[-1]["loss"] < a[0]["loss"] - 0.5                          # the runs learn: the equality is not of idle models


@pytest.fixture(scope="module")
def mesh_run(config):
    "The same config on a dp2 x cp2 mesh of 4 processes."
    r = _torchrun(config, 4, config / "mesh", "--dp", "2", "--cp", "2")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["steps"] == 20   # one summary line: rank 0's
    return config / "mesh"


def test_mesh_trains_the_one_process_curve(config, mesh_run):
    _close(mesh_run, config / "one")
    latest = (mesh_run / "latest").read_text()
    assert latest == "ckpt_0000020" and (mesh_run / latest / "run.pt").exists()
    assert len(list((mesh_run / latest).glob("*.distcp"))) == 4         # one shard file per process


@pytest.mark.parametrize("flags", [["--dp", "2", "--tp", "2"], ["--dp", "1", "--cp", "2", "--tp", "2"]])
def test_tensor_parallel_meshes_train_the_one_process_curve(config, flags):
    "Tensor (and sequence) parallelism over 2 processes, with FSDP2 over dp or with ring attention over cp."
    out = config / "_".join(flags).replace("--", "")
    r = _torchrun(config, 4, out, *flags)
    assert r.returncode == 0, r.stderr
    _close(out, config / "one")
    a, b = _steps(out), _steps(config / "one")                         # per-layer norms: each weight counted once
    assert max(abs(x["grad_norm/norm"] - y["grad_norm/norm"]) for x, y in zip(a, b) if "grad_norm/norm" in y) < 1e-5
    if flags[1] == "2":                                                 # dp2 x tp2's own checkpoint resumes it exactly
        again = branch_run(out, config / f"{out.name}_again", 10)
        r = _torchrun(config, 4, again, *flags)
        assert r.returncode == 0, r.stderr
        assert [x["loss"] for x in _steps(again)] == [x["loss"] for x in a]


def _workers(pid):
    "The pids of torchrun's worker processes (its children that run llmcourse)."
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == pid and b"llmcourse" in cmdline:
            kids.append(int(stat.parent.name))
    return kids


def test_kill9_of_one_rank_stops_the_job_and_the_rerun_resumes(config, mesh_run):
    out = config / "killed"
    p = _torchrun(config, 4, out, "--dp", "2", "--cp", "2", wait=False)
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        done = [r["step"] for r in _steps(out)] if (out / "metrics.jsonl").exists() else []
        if done and done[-1] >= 8:
            break
        time.sleep(0.05)
    assert p.poll() is None, p.stderr.read().decode()
    workers = _workers(p.pid)
    assert len(workers) == 4
    os.kill(workers[-1], signal.SIGKILL)                                # one rank dies; the others are mid-step
    p.wait(timeout=120)                                                 # torchrun stops the rest: no hang
    assert p.returncode != 0
    r = _torchrun(config, 4, out, "--dp", "2", "--cp", "2")
    assert r.returncode == 0, r.stderr
    assert [x["loss"] for x in _steps(out)] == [x["loss"] for x in _steps(mesh_run)]   # the same curve, bit for bit
    assert not list(out.glob("*.tmp"))


@pytest.mark.parametrize("n,flags", [(4, ["--dp", "4"]), (4, ["--dp", "2", "--tp", "2"]), (1, []),
                                     (4, ["--pp", "2", "--dp", "2"])])
def test_a_sharded_checkpoint_resumes_on_another_mesh(config, mesh_run, n, flags):
    "Saved by dp2 x cp2 at step 10; resumed by dp4, dp2 x tp2, one process and pp2 x dp2: the one-process curve goes on."
    out = branch_run(mesh_run, config / f"reshard_{n}{'_'.join(flags)}", 10)
    r = _torchrun(config, n, out, *flags)
    assert r.returncode == 0, r.stderr
    _close(out, config / "one")


def test_consolidate_gives_one_file_that_one_process_resumes(config, mesh_run, tmp_path):
    from llmcourse.distributed import consolidate
    out = consolidate(mesh_run, tmp_path / "one_file")
    ck, ref = load_checkpoint(out), load_checkpoint(config / "one")
    assert ck["step"] == ref["step"] == 20
    assert max((ck["model"][k] - ref["model"][k]).abs().max().item() for k in ref["model"]) < 1e-4
    assert set(ck["optimizer"]["state"]) == set(ref["optimizer"]["state"])   # the optimizer too, in one-process form
    cfg = TrainConfig(**(json.loads((out / "config.json").read_text()) | {"max_steps": 22}))
    assert train(cfg, override=True)["steps"] == 22


@pytest.mark.parametrize("n,flags,says", [
    (4, ["--dp", "3"], "a mesh of dp=3 x cp=1 x tp=1 needs 3 processes; this job has 4"),
    (2, ["--cp", "2", "--dp", "1"], "is not a multiple of 2·cp = 4"),
    (4, ["--tp", "4", "--dp", "1"], "n_kv_heads=2 is not a multiple of tp=4"),
    (4, ["--pp", "3", "--dp", "1"], "a mesh of pp=3 x dp=1 x cp=1 x tp=1 needs 3 processes; this job has 4"),
    (4, ["--pp", "4", "--dp", "1"], "n_layers=2 is not a multiple of pp=4"),
])
def test_a_mesh_that_does_not_fit_is_a_clear_error_on_every_rank(config, tmp_path, n, flags, says):
    if "--cp" in flags:                                                 # 62 tokens a row: not a multiple of 4
        cfg = json.loads((config / "run.json").read_text()) | {"seq_len": 62}
        (tmp_path / "run.json").write_text(json.dumps(cfg))
        config = tmp_path
    r = _torchrun(config, n, tmp_path / "bad", *flags)
    assert r.returncode != 0
    assert r.stderr.count(says) == n, r.stderr                          # every rank says why, none hangs


def test_the_noise_scale_on_a_mesh_equals_one_process(config, tmp_path):
    "noise_scale=True on dp2 x tp2: each micro-batch's gradient is summed from every process's shards."
    cfg = json.loads((config / "run.json").read_text()) | {"grad_accum": 2, "noise_scale": True, "max_steps": 5,
                                                           "eval_every": 0, "out": str(tmp_path / "one")}
    (tmp_path / "run.json").write_text(json.dumps(cfg))
    train(TrainConfig(**cfg))
    r = _torchrun(tmp_path, 4, tmp_path / "mesh", "--dp", "2", "--tp", "2")
    assert r.returncode == 0, r.stderr
    a, b = _steps(tmp_path / "mesh"), _steps(tmp_path / "one")
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):                                               # differences of near sums: relative 1e-4
        for k in ("gns_grad_sq", "gns_trace"):
            assert abs(x[k] - y[k]) <= 1e-4 * abs(y[k]), (k, x[k], y[k])


@pytest.fixture(scope="module")
def pipeline_run(config):
    "The same config on 2 pipeline stages x dp2 (1F1B, the default schedule): 4 processes."
    r = _torchrun(config, 4, config / "pp2_dp2", "--pp", "2", "--dp", "2")
    assert r.returncode == 0, r.stderr
    return config / "pp2_dp2"


def _layer_norms_close(run, reference):
    "Every layer's gradient norm: each stage logs its own layers; the sums over processes join them."
    a, b = _steps(run), _steps(reference)
    keys = [k for k in b[4] if k.startswith("grad_norm/")]
    assert len(keys) == 5                                               # embed, 2 blocks, norm, lm_head
    assert max(abs(x[k] - y[k]) for x, y in zip(a, b) if "grad_norm/norm" in y for k in keys) < 1e-5


def test_a_pipeline_trains_the_one_process_curve(config, pipeline_run):
    _close(pipeline_run, config / "one")
    _layer_norms_close(pipeline_run, config / "one")
    assert len(list((pipeline_run / "ckpt_0000020").glob("*.distcp"))) == 4   # each stage's shards, by its dp ranks


@pytest.mark.parametrize("flags", [["--dp", "2", "--pp-schedule", "gpipe"], ["--dp", "1", "--tp", "2"]])
def test_gpipe_and_a_pipeline_of_tensor_parallel_stages_train_the_one_process_curve(config, flags):
    "GPipe over dp2; 1F1B with tp2 in each stage (no FSDP: the norms' partial gradients are summed over tp)."
    out = config / "_".join(["pp2", *flags]).replace("--", "")
    r = _torchrun(config, 4, out, "--pp", "2", *flags)
    assert r.returncode == 0, r.stderr
    _close(out, config / "one")
    _layer_norms_close(out, config / "one")


def test_a_pipeline_checkpoint_resumes_exactly_and_consolidates(config, pipeline_run, tmp_path):
    from llmcourse.distributed import consolidate
    again = branch_run(pipeline_run, config / "pp2_dp2_again", 10)
    r = _torchrun(config, 4, again, "--pp", "2", "--dp", "2")
    assert r.returncode == 0, r.stderr
    assert [x["loss"] for x in _steps(again)] == [x["loss"] for x in _steps(pipeline_run)]   # bit for bit
    out = consolidate(pipeline_run, tmp_path / "one_file")              # both stages' weights, by their names
    ck, ref = load_checkpoint(out), load_checkpoint(config / "one")
    assert ck["step"] == ref["step"] == 20
    assert max((ck["model"][k] - ref["model"][k]).abs().max().item() for k in ref["model"]) < 1e-4
    assert set(ck["optimizer"]["state"]) == set(ref["optimizer"]["state"])
    cfg = TrainConfig(**(json.loads((out / "config.json").read_text()) | {"max_steps": 22}))
    assert train(cfg, override=True)["steps"] == 22
