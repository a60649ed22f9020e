"Chapter 13's multiple-choice scores equal lm-evaluation-harness's on the same exported model (skipped, with the reason, if lm_eval is absent)."
import json

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed: pip install 'llmcourse[eval]'")

from llmcourse.evaluation import evaluate_mcq, score_mcq
from llmcourse.model import Llama, ModelConfig, save_pretrained
from llmcourse.samples import load_samples
from llmcourse.tokenizer import DIGITS_PATTERN, Tokenizer, train_bpe

TASK = """task: course_mcq
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{text}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def test_mcq_scores_equal_the_harness(repo_root, tmp_path):
    from transformers import PreTrainedTokenizerFast
    from lm_eval.tasks import TaskManager
    items = [d for d in load_samples("eval_mcq.jsonl", repo_root / "data_samples")][:24]
    texts = [d["text"] for d in load_samples("knowledge_en.jsonl", repo_root / "data_samples")][:300] + [i["text"] + " " + " ".join(map(str, i["choices"])) for i in items]
    specials = ["<|endoftext|>"]
    tok = Tokenizer(*train_bpe(texts, 600, specials, DIGITS_PATTERN), specials, DIGITS_PATTERN)
    torch.manual_seed(0)
    model = Llama(ModelConfig(vocab_size=640, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # not the initial values: norms and all
    folder = tmp_path / "hf"
    save_pretrained(model, folder)
    PreTrainedTokenizerFast(tokenizer_object=tok.to_hf(), bos_token="<|endoftext|>", eos_token="<|endoftext|>").save_pretrained(folder)
    data = tmp_path / "mcq.jsonl"
    data.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "course_mcq.yaml").write_text(TASK.format(data=data))
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32,add_bos_token=True", tasks=["course_mcq"],
                                  task_manager=TaskManager(include_path=str(tmp_path / "tasks")), device="cpu", batch_size=1, log_samples=True)
    theirs = out["results"]["course_mcq"]
    ours = evaluate_mcq(model, tok, items)
    assert ours["acc"] == pytest.approx(theirs["acc,none"]) and ours["acc_norm"] == pytest.approx(theirs["acc_norm,none"])
    for s in out["samples"]["course_mcq"]:                       # and every log-likelihood, item by item
        mine = score_mcq(model, tok, items[s["doc_id"]])["loglik"]
        assert [r[0] for r in s["filtered_resps"]] == pytest.approx(mine, abs=1e-4)
