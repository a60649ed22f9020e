"""Execute notebooks in place, on this machine, keeping the outputs a reader should see.

Cells whose first line is a test flag from settings.ini (`#| cuda`, `#| multigpu`, `#| slow`) are
not run here: they keep the outputs they already hold, which come from a real run on a GPU machine
(see the design doc). Every other cell is run and its outputs are replaced. Run from the repo root:

    python .ci/run_nbs.py nbs/00_core.ipynb [more notebooks...]
    python .ci/run_nbs.py --flags cuda nbs/00_core.ipynb   # on a GPU machine: run the cuda cells too
"""
import argparse, os, re
from configparser import ConfigParser
from pathlib import Path

from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="+")
    p.add_argument("--flags", default="", help="space-separated flags whose cells are run too")
    a = p.parse_args()
    ini = ConfigParser(); ini.read(ROOT / "settings.ini")
    skip = set(ini["DEFAULT"]["tst_flags"].split()) - set(a.flags.split())
    flagged = re.compile(r"^#\|\s*(" + "|".join(map(re.escape, sorted(skip))) + r")\s*$") if skip else None
    os.environ.setdefault("LLMCOURSE_PROGRESS", "0")
    for path in map(Path, a.notebooks):
        nb = read_nb(path)
        cwd = os.getcwd(); os.chdir(path.parent)  # notebooks run from nbs/, as nbdev_test runs them
        try: CaptureShell().run_all(nb, exc_stop=True, preproc=lambda c: bool(flagged and c.cell_type == "code" and c.source and flagged.match(c.source.splitlines()[0])))
        finally: os.chdir(cwd)
        write_nb(nb, path)
        print(f"executed {path}")


if __name__ == "__main__":
    main()
