"""Render nbs/index.ipynb to README.md (what `nbdev_readme` does, without needing Quarto).

Markdown cells are copied as they are; code cells become ```python blocks followed by their text
outputs. `python .ci/readme.py --check` exits 1 when README.md is out of date.
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file. -->\n\n"


def render(nb_path: Path = ROOT / "nbs" / "index.ipynb") -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    parts = []
    for cell in nb["cells"]:
        src = "".join(cell["source"]).strip()
        if not src or src.startswith("#| hide"): continue
        if cell["cell_type"] == "markdown": parts.append(src)
        elif cell["cell_type"] == "code":
            parts.append(f"```python\n{src}\n```")
            for out in cell.get("outputs", []):
                text = "".join(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
                if text.strip(): parts.append(f"```\n{text.rstrip()}\n```")
    return HEADER + "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    readme = ROOT / "README.md"
    text = render()
    if "--check" in sys.argv[1:]:
        ok = readme.exists() and readme.read_text(encoding="utf-8") == text
        print("README.md is up to date" if ok else "README.md is stale: run python .ci/readme.py")
        sys.exit(0 if ok else 1)
    readme.write_text(text, encoding="utf-8")
    print(f"wrote {readme}")
