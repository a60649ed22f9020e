"Shared fixtures: the repository root and the installed `llmcourse` console script."
import shutil, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def llmcourse_exe() -> str:
    "The console script installed beside this Python (the one a user would type)."
    exe = Path(sys.executable).parent / "llmcourse"
    found = str(exe) if exe.exists() else shutil.which("llmcourse")
    if not found: pytest.fail("the `llmcourse` console script is not installed: pip install -e '.[dev]'")
    return found
