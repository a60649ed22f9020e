"Continued pre-training: token shares realised by the loader, a continued run built from (and started at) its base, kill -9 resume, and the small helpers."
import json, math, os, random, shutil, signal, subprocess, time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from llmcourse.core import read_jsonl, save_config
from llmcourse.cpt import (continuation_probes, cpt_config, dcpt_points, instruction_documents, measure_run, ratio_shares,
                           replay_shares, stability_gap, tradeoff_table)
from llmcourse.data import PackedLoader, TokenShards, shard_mixture, tokenize_to_shards
from llmcourse.scaling import text_pieces
from llmcourse.tokenizer import Tokenizer, tokenizer_corpus, train_bpe
from llmcourse.training import Trainer, TrainConfig, load_checkpoint, read_metrics, train

GENERAL = {"code/python", "prose/en", "web/en"}                     # tokenizer_corpus groups replayed as "general"
BASE_OVERRIDES = {"dim": 64, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1}
BASE_LR = 3e-3


@pytest.fixture(scope="module")
def data(tmp_path_factory, repo_root):
    "Shards of three groups (general, domain = English knowledge, instruction = Q&A from the fact table), cut into 600-character pieces, with a 512-entry tokenizer."
    work = tmp_path_factory.mktemp("cpt_data")
    corpus = tokenizer_corpus(repo_root / "data_samples", 0)
    docs = [{"id": d["id"], "text": d["text"], "group": "domain" if d["group"] == "knowledge/en" else "general"}
            for d in corpus if not d["heldout"] and (d["group"] == "knowledge/en" or d["group"] in GENERAL)][::6]
    facts = [f for f in read_jsonl(repo_root / "data_samples" / "knowledge_facts.jsonl") if f["lang"] == "en"]
    docs += [{"id": d["id"], "text": d["text"], "group": "instruction"} for d in instruction_documents(facts)[:300]]
    tok = Tokenizer(*train_bpe([d["text"] for d in docs[::2]], 512, ["<|endoftext|>"]), ["<|endoftext|>"])
    path = tok.save(work / "tokenizer.json")
    pieces = [{"id": f"{d['id']}#{k}", "text": t, "group": d["group"]} for d in docs for k, t in enumerate(text_pieces(d["text"], 600))]
    tokenize_to_shards(pieces, path, work / "train", workers=1)
    heldout_general = [d["text"] for d in corpus if d["heldout"] and d["group"] == "code/python"]
    return {"tok": tok, "train": work / "train", "heldout_general": heldout_general, "facts": facts, "work": work}


@pytest.fixture(scope="module")
def base(tmp_path_factory, data):
    "A tiny base run trained on the general group alone."
    out = tmp_path_factory.mktemp("cpt_base") / "base"
    train(TrainConfig(shards=str(data["train"]), out=str(out), model="tiny", model_overrides=BASE_OVERRIDES, seq_len=64, batch_size=4,
                      max_steps=10, lr=BASE_LR, warmup_steps=2, schedule="cosine", mixture={"general": 1.0}, ckpt_every=0,
                      keep_checkpoints=2, log_every=10, eval_every=0, threads=1, tensorboard=False, seed=0, device="cpu"))
    return out


def _train_cmd(llmcourse_exe, cfg_path):
    return [llmcourse_exe, "train", "--config", str(cfg_path)]


def _losses(out):
    return [(r["step"], r["loss"]) for r in read_metrics(out) if "event" not in r]


# ---------------------------------------------------------------- the mixture, in tokens

MIXES = {"replay 0": (lambda: replay_shares(0.0), {"domain": 1.0}),
         "replay 0.1": (lambda: replay_shares(0.1), {"general": 0.1, "domain": 0.9}),
         "replay 0.3": (lambda: replay_shares(0.3), {"general": 0.3, "domain": 0.7}),
         "replay 0.5": (lambda: replay_shares(0.5), {"general": 0.5, "domain": 0.5}),
         "7:2:1": (lambda: ratio_shares("7:2:1"), {"general": 0.7, "domain": 0.2, "instruction": 0.1})}   # general : domain : instruction


@pytest.mark.parametrize("mix", list(MIXES))
def test_replay_mixture_realised_in_tokens(data, base, tmp_path, mix):
    "cpt_config passes the token shares to the trainer unchanged, and the loader gives every group its share of the tokens (within 1 point); a group without a share gets none."
    shares, wanted = MIXES[mix][0](), MIXES[mix][1]
    cfg = cpt_config(base, data["train"], tmp_path / "cont", shares, max_steps=100)
    assert cfg.mixture == wanted
    shards = TokenShards(data["train"])
    loader = PackedLoader(shards, 64, 16, shards.index["specials"]["<|endoftext|>"], seed=0, mixture=shard_mixture(shards, cfg.mixture))
    assert loader.group_names == ["domain", "general", "instruction"]
    counts, it = np.zeros(3, dtype=np.int64), iter(loader)
    for _ in range(300): counts += np.bincount(next(it)["group_ids"].flatten().numpy(), minlength=3)
    assert counts.sum() == 300 * 16 * 64
    realised = dict(zip(loader.group_names, (counts / counts.sum()).tolist()))
    for g in loader.group_names:
        assert abs(realised[g] - wanted.get(g, 0.0)) <= 0.01, (g, realised, wanted)
        if g not in wanted: assert counts[loader.group_names.index(g)] == 0, (g, realised)   # no token at all
    if mix == "replay 0": assert counts.tolist() == [300 * 16 * 64, 0, 0]


# ---------------------------------------------------------------- cpt_config

def test_cpt_config_carries_the_base(data, base, tmp_path):
    cfg = cpt_config(base, data["train"], tmp_path / "cont", replay_shares(0.3), max_steps=200)
    assert cfg.model == "tiny" and cfg.model_overrides == BASE_OVERRIDES and cfg.seq_len == 64 and cfg.precision == "fp32"
    assert (cfg.batch_size, cfg.threads, cfg.device) == (4, 1, "cpu")
    assert cfg.init_from == str(base) and cfg.shards == str(data["train"]) and cfg.out == str(tmp_path / "cont")
    assert cfg.max_steps == 200 and cfg.schedule == "cosine" and cfg.decay_start is None and cfg.inject == {}
    assert cfg.lr == pytest.approx(BASE_LR / 3, rel=1e-12)
    assert cfg.warmup_steps == 10                                                    # 5% of 200
    assert cfg.mixture == {"general": 0.3, "domain": 0.7}                            # token shares, passed as they are

    assert cpt_config(base, data["train"], tmp_path / "c", replay_shares(0.3), 40).warmup_steps == 2
    assert cpt_config(base, data["train"], tmp_path / "c", replay_shares(0.3), 40, warmup_steps=7).warmup_steps == 7
    assert cpt_config(base, data["train"], tmp_path / "c", replay_shares(0.3), 40, peak_lr=2e-3).lr == 2e-3
    assert cpt_config(base, data["train"], tmp_path / "c", replay_shares(0.3), 40, lr_ratio=0.5).lr == pytest.approx(1.5e-3, rel=1e-12)
    other = cpt_config(base, data["train"], tmp_path / "c", ratio_shares("7:2:1"), 40, schedule="wsd", eval_every=3, seed=5)
    assert (other.schedule, other.eval_every, other.seed) == ("wsd", 3, 5)
    assert other.mixture == {"general": 0.7, "domain": 0.2, "instruction": 0.1}
    with pytest.raises(ValueError, match="no documents of group"): cpt_config(base, data["train"], tmp_path / "x", {"legal": 1.0}, 10)

    empty = tmp_path / "empty"; empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"): cpt_config(empty, data["train"], tmp_path / "x", replay_shares(0.3), 10)
    no_ckpt = tmp_path / "no_ckpt"; no_ckpt.mkdir(); shutil.copy(base / "config.json", no_ckpt / "config.json")
    with pytest.raises(FileNotFoundError, match="checkpoint"): cpt_config(no_ckpt, data["train"], tmp_path / "x", replay_shares(0.3), 10)

    texts = data["heldout_general"][:20]
    small = Tokenizer(*train_bpe(texts, 300, ["<|endoftext|>"]), ["<|endoftext|>"])
    assert len(small) != len(data["tok"])
    tokenize_to_shards([{"id": f"d{i}", "text": t, "group": g} for i, (t, g) in enumerate(zip(texts, ["domain", "general"] * 10))],
                       small.save(tmp_path / "small.json"), tmp_path / "small_shards", workers=1)
    with pytest.raises(ValueError, match="vocabulary"): cpt_config(base, tmp_path / "small_shards", tmp_path / "x", replay_shares(0.3), 10)


def test_continued_run_starts_from_base_weights(data, base, tmp_path):
    "A Trainer from cpt_config holds the base's final weights, a fresh optimizer and step 0; once it has its own checkpoint, that wins."
    ck = load_checkpoint(base)
    assert ck["step"] == 10 and any("exp_avg" in s for s in ck["optimizer"]["state"].values())   # the base's optimizer is not fresh
    cfg = cpt_config(base, data["train"], tmp_path / "cont", replay_shares(0.3), max_steps=6)
    t = Trainer(cfg)
    sd = t.model.state_dict()
    assert set(sd) == set(ck["model"])
    assert all(torch.equal(sd[k], ck["model"][k]) for k in sd)
    assert t.step == 0 and len(t.opt.state) == 0 and not any("exp_avg" in s for s in t.opt.state.values())
    fresh = Trainer(replace(cfg, init_from=None, out=str(tmp_path / "fresh"))).model.state_dict()
    assert not all(torch.equal(fresh[k], ck["model"][k]) for k in fresh)            # so the equality above means something

    t.run()
    own = load_checkpoint(tmp_path / "cont")
    assert own["step"] == 6
    again = Trainer(cfg)                                                             # resumes its own checkpoint, not the base
    assert again.step == 6 and len(again.opt.state) > 0
    assert all(torch.equal(v, own["model"][k]) for k, v in again.model.state_dict().items())
    assert not all(torch.equal(v, ck["model"][k]) for k, v in again.model.state_dict().items())


def test_kill9_resume_continued_run(data, base, tmp_path, llmcourse_exe):
    "kill -9 a continued run at random moments: resumed, it restores its own checkpoint (not the base) and ends exactly like an uninterrupted run."
    def config(out): return cpt_config(base, data["train"], out, replay_shares(0.3), max_steps=40, ckpt_every=5, eval_every=0)
    ref_cfg = tmp_path / "ref.json"; save_config(config(tmp_path / "ref"), ref_cfg)
    r = subprocess.run(_train_cmd(llmcourse_exe, ref_cfg), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    reference = _losses(tmp_path / "ref")
    assert [s for s, _ in reference] == list(range(1, 41))

    cfg_path = tmp_path / "killed.json"; save_config(config(tmp_path / "killed"), cfg_path)
    rng, kills, last = random.Random(0), 0, 0
    while kills < 3:                                    # kill -9 three times, each after new progress past the last kill
        p = subprocess.Popen(_train_cmd(llmcourse_exe, cfg_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = rng.randint(last + 2, last + 8)
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None:
            m = tmp_path / "killed" / "metrics.jsonl"
            done = [json.loads(l)["step"] for l in m.read_text().splitlines() if l] if m.exists() else []
            if done and done[-1] >= target: break
            time.sleep(0.005)
        if p.poll() is not None: break                  # finished before we could kill it
        os.kill(p.pid, signal.SIGKILL); p.wait(); kills += 1; last = done[-1]
    r = subprocess.run(_train_cmd(llmcourse_exe, cfg_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert kills == 3
    assert not list((tmp_path / "killed").glob("*.tmp"))
    assert _losses(tmp_path / "killed") == reference               # exactly the same curve, float for float
    final, ref_final, b = (load_checkpoint(p)["model"] for p in (tmp_path / "killed", tmp_path / "ref", base))
    assert set(final) == set(ref_final) and all(torch.equal(final[k], ref_final[k]) for k in final)
    assert not all(torch.equal(final[k], b[k]) for k in final)      # it did train past the base


# ---------------------------------------------------------------- small helpers, exact values

def test_replay_and_ratio_shares():
    assert replay_shares(0.0) == {"domain": 1.0}
    assert replay_shares(0.5) == {"domain": 0.5, "general": 0.5}
    assert replay_shares(0.25, 0.25) == {"domain": 0.5, "general": 0.25, "instruction": 0.25}
    assert replay_shares(0.0, 0.5) == {"domain": 0.5, "instruction": 0.5}
    assert replay_shares(0.2, groups=("old", "new", "qa")) == {"old": 0.2, "new": 0.8}     # groups in the order general, domain, instruction
    assert list(replay_shares(0.3, 0.1)) == ["general", "domain", "instruction"]
    assert ratio_shares("7:2:1") == {"general": 0.7, "domain": 0.2, "instruction": 0.1}        # general : domain : instruction
    assert list(ratio_shares("7:2:1")) == ["general", "domain", "instruction"]
    assert ratio_shares("7:2:1") == pytest.approx(replay_shares(0.7, 0.1), abs=1e-12)
    assert ratio_shares("1:3:0") == {"general": 0.25, "domain": 0.75}
    assert ratio_shares("3:1", groups=("a", "b")) == {"a": 0.75, "b": 0.25}
    for bad in (lambda: replay_shares(0.6, 0.4), lambda: replay_shares(1.0), lambda: replay_shares(-0.1), lambda: replay_shares(0.2, 1.5),
                lambda: ratio_shares("7:x:1"), lambda: ratio_shares("0:0:0"), lambda: ratio_shares("7:2"), lambda: ratio_shares("7:-2:1"),
                lambda: ratio_shares("7:inf:1")):
        with pytest.raises(ValueError): bad()
    with pytest.raises(ValueError, match="no tokens for the domain"): replay_shares(0.6, 0.4)
    with pytest.raises(ValueError, match="2 parts for 3 groups"): ratio_shares("7:2")


def test_instruction_documents():
    facts = [{"id": "f1", "text": "The capital of Oru is Pella.", "lang": "en", "entity": "Oru", "relation": "capital", "seen": True},
             {"id": "f2", "text": "Oru was founded in 1200.", "lang": "en", "entity": "Oru", "relation": "founded", "seen": False},
             {"id": "f3", "text": "Oru was founded in 900.", "lang": "en", "entity": "Oru", "relation": "founded", "seen": True},
             {"id": "f4", "text": "Bex mostly exports tin.", "lang": "en", "entity": "Bex", "relation": "main_export", "seen": True}]
    rejects = []
    docs = instruction_documents(facts, rejects=rejects)
    assert docs == [
        {"id": "instr-f1", "text": "Question: What is the capital of Oru?\nAnswer: The capital of Oru is Pella.", "domain": "instruction",
         "lang": "en", "fact": "f1", "entity": "Oru"},
        {"id": "instr-f3", "text": "Question: What is the founding year of Oru?\nAnswer: Oru was founded in 900.", "domain": "instruction",
         "lang": "en", "fact": "f3", "entity": "Oru"},
        {"id": "instr-f4", "text": "Question: What is the main export of Bex?\nAnswer: Bex mostly exports tin.", "domain": "instruction",
         "lang": "en", "fact": "f4", "entity": "Bex"}]
    assert len(rejects) == 1 and rejects[0]["line"] == 2 and rejects[0]["file"] == "knowledge_facts.jsonl" and rejects[0]["raw"] == "f2"
    assert "held-out" in rejects[0]["reason"]
    rejects = []
    assert [d["id"] for d in instruction_documents(facts, entities={"Bex"}, rejects=rejects, source="x.jsonl")] == ["instr-f4"]
    assert [(r["line"], r["file"]) for r in rejects] == [(1, "x.jsonl"), (2, "x.jsonl"), (3, "x.jsonl")]
    assert [("held-out" in r["reason"], "entity" in r["reason"]) for r in rejects] == [(False, True), (True, False), (False, True)]
    assert instruction_documents(facts, entities={"Elsewhere"}) == []


def test_instruction_documents_on_the_fact_table(data):
    "Every seen fact of the table becomes one document, every held-out one a rejection."
    rejects = []
    docs = instruction_documents(data["facts"], rejects=rejects)
    seen = [f for f in data["facts"] if f["seen"]]
    assert 0 < len(seen) < len(data["facts"])
    assert [d["fact"] for d in docs] == [f["id"] for f in seen]
    assert len(rejects) == len(data["facts"]) - len(seen) and all("held-out" in r["reason"] for r in rejects)
    assert all(d["text"].endswith("\nAnswer: " + f["text"]) and f["entity"] in d["text"].split("\n")[0] for d, f in zip(docs, seen))


def test_stability_gap():
    def recs(points, key="ppl/general"):
        out = []
        for s, l in points: out += [{"step": s, "loss": 9.0, "lr": 1e-3}, {"step": s, "loss": 9.0, key: math.exp(l), "eval_loss": l}]
        return out
    g = stability_gap(recs([(5, 4.2), (10, 4.6), (15, 4.1), (20, 3.95), (25, 4.05)]), 4.0)
    assert (g["peak_step"], g["recovered_step"]) == (10, 20)
    assert g["rise"] == pytest.approx(0.6, abs=1e-12) and g["final_rise"] == pytest.approx(0.05, abs=1e-12)
    g = stability_gap(recs([(5, 3.9), (10, 4.5), (15, 4.2), (20, 4.1)]), 4.0)     # below `before` only before the peak: not a recovery
    assert (g["peak_step"], g["recovered_step"]) == (10, None)
    assert g["rise"] == pytest.approx(0.5, abs=1e-12) and g["final_rise"] == pytest.approx(0.1, abs=1e-12)
    g = stability_gap(recs([(2, 3.0), (4, 3.5), (6, 2.8)], key="ppl/domain"), 3.2, key="ppl/domain")
    assert (g["peak_step"], g["recovered_step"]) == (4, 6)
    assert g["rise"] == pytest.approx(0.3, abs=1e-12) and g["final_rise"] == pytest.approx(-0.4, abs=1e-12)
    with pytest.raises(ValueError, match="ppl/general"): stability_gap([{"step": 1, "loss": 3.0}], 4.0)


def _fake_run(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True)
    save_config(TrainConfig(shards="nowhere", out=str(folder), batch_size=4, seq_len=8, grad_accum=2), folder / "config.json")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_dcpt_points_and_measure_run(tmp_path):
    run = _fake_run(tmp_path / "run", [{"step": s, "loss": 5.0} for s in range(1, 21)]
                    + [{"step": 10, "eval_loss": 4.0, "ppl/domain": 50.0, "ppl/general": 80.0},
                       {"step": 15, "eval_loss": 4.0, "ppl/domain": 45.0},                     # no general: not a point
                       {"step": 20, "eval_loss": 3.9, "ppl/domain": 40.0, "ppl/general": 90.0}])
    pts = dcpt_points(run, 0.7, 1e6)
    assert pts == [{"N": 1e6, "D": 640, "r": 0.7, "domain": math.log(50.0), "general": math.log(80.0)},
                   {"N": 1e6, "D": 1280, "r": 0.7, "domain": math.log(40.0), "general": math.log(90.0)}]
    assert dcpt_points(run, 0.7, 1e6, domain="general", general="domain")[0]["domain"] == math.log(80.0)
    assert measure_run(run, tok=None) == {"loss": {"domain": math.log(40.0), "general": math.log(90.0)}, "probes": {}}
    no_eval = _fake_run(tmp_path / "no_eval", [{"step": 1, "loss": 5.0}])
    assert dcpt_points(no_eval, 0.7, 1e6) == []
    with pytest.raises(ValueError, match="held-out evaluation"): measure_run(no_eval, tok=None)


def test_tradeoff_table():
    base = {"loss": {"domain": 5.0, "general": 4.0}, "probes": {"facts": 0.25}}
    runs = {"replay 0%": {"loss": {"domain": 4.0, "general": 4.5}, "probes": {"facts": 0.5, "cont": 0.3}},
            "replay 50%": {"loss": {"domain": 4.5, "general": 4.25, "other": 1.0}, "probes": {}}}
    assert tradeoff_table(base, runs) == [
        {"run": "replay 0%", "domain_loss": 4.0, "general_loss": 4.5, "gain": 1.0, "forgetting": 0.5, "forgetting_pct": 12.5,
         "probe facts": 0.5, "probe cont": 0.3},
        {"run": "replay 50%", "domain_loss": 4.5, "general_loss": 4.25, "gain": 0.5, "forgetting": 0.25, "forgetting_pct": 6.25}]
    flipped = tradeoff_table({"loss": {"a": 2.0, "b": 1.0}}, {"x": {"loss": {"a": 2.5, "b": 0.5}, "probes": {}}}, domain="b", general="a")
    assert flipped == [{"run": "x", "domain_loss": 0.5, "general_loss": 2.5, "gain": 0.5, "forgetting": 0.5, "forgetting_pct": 25.0}]


def test_continuation_probes(data):
    tok, texts = data["tok"], [t for t in data["heldout_general"] if t.isascii()][:30]
    assert len(texts) >= 10
    for ctx, opt, n_opt in ((32, 4, 4), (8, 3, 5)):
        following, spans = {}, set()                   # every (context -> true continuations) and every option-sized span
        for t in texts:
            ids = tok.encode(t)
            for i in range(ctx, len(ids) - opt + 1):
                c, o = tok.decode(ids[i - ctx:i]), tok.decode(ids[i:i + opt])
                following.setdefault(c, set()).add(o); spans.add(o)
        probes = continuation_probes(texts, tok, 25, context_tokens=ctx, option_tokens=opt, n_options=n_opt, group="g", seed=3)
        assert len(probes) == 25
        for p in probes:
            assert p["kind"] == "choice" and p["group"] == "g" and len(p["options"]) == n_opt == len(set(p["options"]))
            assert p["context"] in following                                             # ctx consecutive tokens of a text
            true = [o for o in p["options"] if o in following[p["context"]]]
            assert true == [p["options"][p["answer"]]]                                   # exactly one option continues it
            assert any(p["context"] + true[0] in t for t in texts)                      # and it does so in the source
            assert all(o in spans for o in p["options"])                                 # every option: opt tokens of a text
        assert probes == continuation_probes(texts, tok, 25, context_tokens=ctx, option_tokens=opt, n_options=n_opt, group="g", seed=3)
        assert probes != continuation_probes(texts, tok, 25, context_tokens=ctx, option_tokens=opt, n_options=n_opt, group="g", seed=4)
    assert len({p["answer"] for p in continuation_probes(texts, tok, 40, seed=0)}) == 4                # the answer is not always first
    rng = random.Random(1)                              # five one-token words: a distractor often draws the true word itself
    few = ["".join(rng.choice([" the", " and", " of", " to", " in"]) for _ in range(80)) for _ in range(4)]
    for p in continuation_probes(few, tok, 30, context_tokens=4, option_tokens=1, seed=0):
        assert len(set(p["options"])) == 4 and set(p["options"]) <= {" the", " and", " of", " to", " in"}
        assert any(p["context"] + p["options"][p["answer"]] in t for t in few)
    with pytest.raises(ValueError, match="36 tokens"): continuation_probes(["a short text", "def f(): pass"], tok, 3)
    with pytest.raises(ValueError, match="uniform"): continuation_probes([" a" * 200], tok, 1, context_tokens=4, option_tokens=2)


def test_extend_vocabulary_rows(data, base, tmp_path, repo_root):
    "New embedding and output rows: old rows kept bit for bit; each init gives exactly its rule; the run continues."
    from llmcourse.cpt import VOCAB_INITS, extend_vocabulary
    from llmcourse.evaluation import load_trained_model
    from llmcourse.tokenizer import extend_bpe
    zh = [d["text"] for d in tokenizer_corpus(repo_root / "data_samples", 0) if d["group"] == "knowledge/zh"][:200]
    old, new = data["tok"], extend_bpe(data["tok"], zh, 64)
    assert len(new) == len(old) + 64
    path = new.save(tmp_path / "tok.json")
    tokenize_to_shards([{"id": f"z{i}", "text": t, "group": "zh"} for i, t in enumerate(zh)], path, tmp_path / "zh", workers=1)
    ref, _ = load_trained_model(base)
    E, W = ref.embed.weight.detach(), ref.lm_head.weight.detach()
    new_ids = range(len(old), len(new))
    for init in VOCAB_INITS:
        run = extend_vocabulary(base, old, new, tmp_path / "zh", tmp_path / init, init, seed=3)
        m, cfg = load_trained_model(run)
        assert cfg.shards == str(tmp_path / "zh") and m.embed.weight.shape[0] == 576     # 576 ids: a multiple of 64 already
        for got, was in ((m.embed.weight, E), (m.lm_head.weight, W)):
            assert torch.equal(got[: len(was)], was)                                       # the old rows, padding rows included
            for i in new_ids:
                if init == "mean":
                    torch.testing.assert_close(got[i], was[: len(old)].mean(0))
                elif init == "pieces":
                    torch.testing.assert_close(got[i], was[old._bpe(new.vocab[i])].mean(0))
            if init == "random":
                assert 0.015 < got[len(old):].std().item() < 0.025                          # N(0, 0.02²), the model's init
    cfg = cpt_config(tmp_path / "pieces", tmp_path / "zh", tmp_path / "cont", {"zh": 1.0}, max_steps=2, eval_every=0, ckpt_every=0)
    train(cfg)                                                                              # the trainer accepts the grown tables
    with pytest.raises(ValueError, match="init must be one of"):
        extend_vocabulary(base, old, new, tmp_path / "zh", tmp_path / "x", "zeros")
    with pytest.raises(ValueError, match="has vocabulary size 512, the extended tokenizer 576"):
        extend_vocabulary(base, old, new, data["train"], tmp_path / "y")
    other = Tokenizer(*train_bpe(zh, 600, ["<|endoftext|>"]), ["<|endoftext|>"])
    with pytest.raises(ValueError, match="does not keep old_tok's ids"):
        extend_vocabulary(base, old, other, tmp_path / "zh", tmp_path / "z")
