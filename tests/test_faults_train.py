"Damaged run folders: corrupt checkpoints, a torn metrics line, changed settings, bad settings, a busy folder."
import json, os, random, shutil, warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llmcourse.core import DataError, FolderBusyError, load_config, lock_folder
from llmcourse.training import (CheckpointError, ConfigMismatchError, Trainer, TrainConfig, load_checkpoint,
                                read_metrics, train)
from test_training import _config, shards  # noqa: F401  (the shards fixture: a small slice of the sample corpus)

STEPS = 6                                               # checkpoints at 0, 2, 4, 6; the last three are kept


def _cfg(shards, out, **kw) -> TrainConfig:
    return _config(shards, out, **({"max_steps": STEPS, "ckpt_every": 2, "keep_checkpoints": 3, "log_every": 1} | kw))


def _ckpt(run: Path, step: int) -> Path:
    return run / f"ckpt_{step:07d}.pt"


def _losses(run) -> list:
    return [(r["step"], r["loss"]) for r in read_metrics(run) if "event" not in r]


def _events(run, kind: str) -> list[dict]:
    return [r for r in read_metrics(run) if r.get("event") == kind]


def _same_weights(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _resume(cfg, override=False) -> tuple[Trainer, list[str]]:
    "A Trainer built on an existing folder, and the warnings it gave."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = Trainer(cfg, override)
    return t, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    "An uninterrupted run of STEPS steps: its folder, final weights and losses."
    out = tmp_path_factory.mktemp("reference") / "run"
    train(_cfg(shards, out))
    return {"out": out, "weights": load_checkpoint(out)["model"], "losses": _losses(out)}


@pytest.fixture
def run(reference, tmp_path):
    "A copy of the finished reference run, to damage."
    out = tmp_path / "run"
    shutil.copytree(reference["out"], out)
    return out


def test_sidecars_written_and_pruned(reference):
    out = reference["out"]
    assert sorted(p.name for p in out.glob("ckpt_*.pt")) == [_ckpt(out, s).name for s in (2, 4, 6)]
    assert sorted(p.name for p in out.glob("*.pt.json")) == [_ckpt(out, s).name + ".json" for s in (2, 4, 6)]
    side = json.loads((out / "ckpt_0000006.pt.json").read_text())
    assert side["bytes"] == _ckpt(out, 6).stat().st_size and side["step"] == 6 and len(side["sha256"]) == 64
    assert (out / "latest").read_text() == "ckpt_0000006.pt"


def _truncated(run): p = _ckpt(run, 6); p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
def _empty(run): _ckpt(run, 6).write_bytes(b"")
def _random(run):  # noise of the same size (the hash notices), seeded: its first byte is no pickle opcode
    _ckpt(run, 6).write_bytes(random.Random(6).randbytes(_ckpt(run, 6).stat().st_size))
def _random_no_sidecar(run):                                                               # an older run: torch.load notices
    _random(run)
    (run / "ckpt_0000006.pt.json").unlink()
def _latest_missing(run):                                                                  # latest names a deleted file
    _ckpt(run, 6).unlink()
    (run / "ckpt_0000006.pt.json").unlink()


DAMAGE = {"truncated": (_truncated, "ckpt_0000006.pt", "bytes"), "empty": (_empty, "ckpt_0000006.pt", "0 bytes"),
          "random": (_random, "ckpt_0000006.pt", "SHA-256"),
          "random_no_sidecar": (_random_no_sidecar, "ckpt_0000006.pt", "torch cannot load it"),
          "latest_missing": (_latest_missing, "latest", "names ckpt_0000006.pt, which is missing")}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_latest_falls_back_and_ends_equal(shards, reference, run, kind):
    damage, file, reason = DAMAGE[kind]
    damage(run)
    t, said = _resume(_cfg(shards, run))
    assert t.step == 4                                                   # the newest intact checkpoint
    assert len(said) == 1 and file in said[0] and reason in said[0] and "using ckpt_0000004.pt" in said[0], said
    assert "weights_only" not in said[0]
    t.run()
    assert _same_weights(load_checkpoint(run)["model"], reference["weights"])   # replayed steps 5 and 6 exactly
    assert _losses(run) == reference["losses"]
    [ev] = _events(run, "checkpoint_skipped")
    assert ev["step"] == 4 and Path(ev["file"]).name == file and reason in ev["reason"]
    assert json.loads((run / "ckpt_0000006.pt.json").read_text())["bytes"] == _ckpt(run, 6).stat().st_size   # rewritten


def test_empty_latest_uses_newest_intact(shards, reference, run):
    (run / "latest").write_text("")
    t, said = _resume(_cfg(shards, run))
    assert t.step == 6 and "latest (it is empty)" in said[0]
    assert _same_weights(t.model.state_dict(), reference["weights"])


def test_all_checkpoints_damaged_is_a_clear_error(shards, run):
    _random(run)                                                        # 6: the hash notices
    _ckpt(run, 4).write_bytes(b"")                                      # 4: the size
    _ckpt(run, 2).write_bytes(random.Random(2).randbytes(300))         # 2, without a sidecar: torch.load's own error
    (run / "ckpt_0000002.pt.json").unlink()
    metrics = (run / "metrics.jsonl").read_bytes()
    with pytest.raises(CheckpointError) as e: Trainer(_cfg(shards, run))
    msg = str(e.value)
    assert isinstance(e.value, ValueError) and str(run) in msg and "no intact checkpoint" in msg
    assert all(f"ckpt_000000{s}.pt:" in msg for s in (2, 4, 6)) and "SHA-256" in msg and "0 bytes" in msg
    assert "torch cannot load it" in msg
    assert "weights_only" not in msg
    assert (run / "metrics.jsonl").read_bytes() == metrics              # nothing started from scratch


def test_torn_metrics_line_is_dropped_on_resume(shards, reference, run):
    _latest_missing(run)                                                # killed after step 5's record began, ckpt at 4
    (run / "latest").write_text("ckpt_0000004.pt")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    torn = next(i for i, l in enumerate(lines) if json.loads(l).get("step") == 5)
    (run / "metrics.jsonl").write_text("\n".join(lines[:torn]) + "\n" + lines[torn][: len(lines[torn]) // 2])
    assert [s for s, _ in _losses(run)] == [1, 2, 3, 4]                 # read_metrics leaves the torn last line out
    t, said = _resume(_cfg(shards, run))
    assert any("dropped line(s)" in w for w in said), said
    t.run()
    assert _losses(run) == reference["losses"]
    assert _same_weights(load_checkpoint(run)["model"], reference["weights"])


def test_read_metrics_names_a_bad_middle_line(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:2] + ["{oops"] + lines[2:]) + "\n")
    with pytest.raises(DataError, match=r"metrics.jsonl:3: not a complete JSON record"): read_metrics(run)


def test_model_shape_change_is_refused(shards, run):
    overrides = {"dim": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1}
    with pytest.raises(ConfigMismatchError) as e: Trainer(_cfg(shards, run, model_overrides=overrides), override=True)
    assert "another shape" in str(e.value) and "dim 64 → 32" in str(e.value) and "new folder" in str(e.value)


def test_changed_lr_refused_then_overridden_and_recorded(shards, reference, run):
    new = _cfg(shards, run, lr=1e-3, max_steps=8, threads=2)           # threads: operational, not a change
    with pytest.raises(ConfigMismatchError) as e: Trainer(new)
    msg = str(e.value)
    assert "lr 0.003 → 0.001" in msg and "max_steps 6 → 8" in msg and "threads" not in msg
    assert "override=True" in msg and "--override" in msg
    assert load_config(TrainConfig, run / "config.json").lr == 3e-3    # the saved settings are untouched
    train(new, override=True)
    [ev] = _events(run, "config_change")
    assert ev == {"step": 6, "event": "config_change", "changes": {"lr": [3e-3, 1e-3], "max_steps": [6, 8]}}
    assert load_config(TrainConfig, run / "config.json").lr == 1e-3
    assert [s for s, _ in _losses(run)] == list(range(1, 9)) and _losses(run)[:6] == reference["losses"]
    for s in (6, 8): _ckpt(run, s).write_bytes(b"")                    # resume from step 4, before the change: kept
    t, _ = _resume(new)
    assert t.step == 4 and len(_events(run, "config_change")) == 1 and len(_events(run, "checkpoint_skipped")) == 2


@pytest.mark.parametrize("bad, says", [
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"), ({"grad_accum": 0}, "grad_accum must be >= 1"),
    ({"seq_len": 1}, "seq_len must be >= 2"), ({"max_steps": -1}, "max_steps must be >= 0"),
    ({"warmup_steps": -5}, "warmup_steps must be >= 0"), ({"lr": -1e-3}, "lr must be a number >= 0"),
    ({"min_lr_ratio": 1.5}, "min_lr_ratio must be between 0 and 1"), ({"decay_fraction": -0.1}, "decay_fraction must be"),
    ({"weight_decay": -0.1}, "weight_decay must be >= 0"), ({"grad_clip": -1.0}, "grad_clip must be >= 0"),
    ({"precision": "fp8"}, "precision must be one of ('fp32', 'bf16', 'fp16'), got 'fp8'"),
    ({"schedule": "linear"}, "schedule must be one of"), ({"log_every": 0}, "log_every must be >= 1"),
    ({"eval_every": -1}, "eval_every must be >= 0"), ({"eval_batches": 0}, "eval_batches must be >= 1"),
    ({"ckpt_every": -2}, "ckpt_every must be >= 0"), ({"keep_checkpoints": 0}, "keep_checkpoints must be >= 1"),
    ({"loss_chunk": -1}, "loss_chunk must be >= 0"), ({"spike_window": 0}, "spike_window must be >= 1"),
    ({"seq_len": "512"}, "seq_len must be int, got str '512'"), ({"lr": "3e-3"}, "lr must be float, got str"),
    ({"recompute": 1}, "recompute must be bool, got int 1"), ({"batch_size": True}, "batch_size must be int, got bool"),
])
def test_validate_names_the_bad_setting(shards, tmp_path, bad, says):
    cfg = _cfg(shards, tmp_path / "run", **bad)
    with pytest.raises(ValueError, match="invalid TrainConfig") as e: cfg.validate()
    assert says in str(e.value)
    with pytest.raises(ValueError, match="invalid TrainConfig"): Trainer(cfg)
    assert not (tmp_path / "run").exists()                              # checked before any work


def test_validate_reports_every_problem_and_accepts_good_settings(shards, tmp_path):
    _cfg(shards, tmp_path / "run").validate()
    with pytest.raises(ValueError) as e: _cfg(shards, tmp_path / "run", batch_size=0, lr=-1.0).validate()
    assert "batch_size must be >= 1" in str(e.value) and "lr must be a number >= 0" in str(e.value)


def test_missing_shards_folder_is_named(shards, tmp_path):
    for name in ("shards", "heldout_shards"):
        cfg = replace(_cfg(shards, tmp_path / "run"), **{name: str(tmp_path / "nowhere")})
        with pytest.raises(FileNotFoundError) as e: Trainer(cfg)
        assert str(e.value) == f"{name}={str(tmp_path / 'nowhere')!r}: no such folder (token shards, chapter 06)"
    assert not (tmp_path / "run").exists()


def test_max_steps_zero_writes_step0_and_stops(shards, tmp_path):
    out = tmp_path / "zero"
    res = train(_cfg(shards, out, max_steps=0))
    assert res["steps"] == 0 and res["tokens"] == 0
    assert (out / "latest").read_text() == "ckpt_0000000.pt" and (out / "ckpt_0000000.pt.json").exists()
    assert read_metrics(out) == [] and load_checkpoint(out)["step"] == 0
    assert train(_cfg(shards, out, max_steps=0))["steps"] == 0          # and resumes as a finished run


def test_config_json_holds_absolute_paths(shards, run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel = lambda p: os.path.relpath(p, tmp_path)
    cfg = _cfg(rel(shards), "cont", heldout_shards=rel(shards), init_from=rel(run), max_steps=0)
    train(cfg)
    saved = json.loads((tmp_path / "cont" / "config.json").read_text())
    assert saved["shards"] == saved["heldout_shards"] == str(Path(shards).resolve())
    assert saved["out"] == str((tmp_path / "cont").resolve()) and saved["init_from"] == str(run.resolve())
    monkeypatch.chdir(run)                                              # the saved file, used from another folder
    again = Trainer(load_config(TrainConfig, tmp_path / "cont" / "config.json"))
    assert again.step == 0 and _events(tmp_path / "cont", "config_change") == []


def test_init_from_a_damaged_run_uses_its_newest_intact_checkpoint(shards, run, tmp_path):
    _truncated(run)
    t, said = _resume(_cfg(shards, tmp_path / "cont", init_from=str(run), max_steps=0))
    assert "ckpt_0000006.pt" in said[0]
    with pytest.warns(UserWarning, match="skipped ckpt_0000006.pt"): step4 = load_checkpoint(run)["model"]
    assert _same_weights(t.model.state_dict(), step4)
    t.run()
    [ev] = _events(tmp_path / "cont", "checkpoint_skipped")
    assert ev["file"] == str(run / "ckpt_0000006.pt")


def test_a_second_trainer_on_a_busy_folder_fails_at_once(shards, run):
    with lock_folder(run, "test"):                                      # another holder
        with pytest.raises(FolderBusyError, match=str(os.getpid())): Trainer(_cfg(shards, run))
    cfg = _cfg(shards, run, max_steps=8)
    t, seen = Trainer(cfg, override=True), []
    step = t._train_step
    def step_and_try():                                                 # while the first one runs
        if not seen:
            with pytest.raises(FolderBusyError) as e: Trainer(cfg, override=True)
            seen.append(str(e.value))
        return step()
    t._train_step = step_and_try
    assert t.run()["steps"] == 8 and "in use" in seen[0]
    assert Trainer(cfg).step == 8                                       # free again once the run ended
