"The README holds exactly two set-up commands, and CI runs the second one verbatim."
import re
from pathlib import Path


def _commands(repo_root: Path) -> list[str]:
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section, flags=re.S)


def test_two_commands(repo_root):
    cmds = _commands(repo_root)
    assert len(cmds) == 2 and all("\n" not in c for c in cmds), cmds
    assert "llmcourse run --data data_samples" in cmds[0]
    assert "nbdev_test" in cmds[1] and "pytest" in cmds[1]


def test_ci_runs_the_second_command_verbatim(repo_root):
    ci = (repo_root / ".ci" / "run").read_text(encoding="utf-8")
    body = [l for l in ci.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    assert _commands(repo_root)[1] in body, "the README's test command and .ci/run have drifted apart"


def test_readme_is_generated_from_index(repo_root):
    "README.md is exactly what .ci/readme.py renders from nbs/index.ipynb (edit the notebook, not the README)."
    import importlib.util
    spec = importlib.util.spec_from_file_location("readme", repo_root / ".ci" / "readme.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    assert (repo_root / "README.md").read_text(encoding="utf-8") == mod.render(repo_root / "nbs" / "index.ipynb")
