#!/usr/bin/env python3
"""Build the course website: the notebooks with their saved outputs, API pages, the slide decks, search.

    python docs/build.py                       # -> docs/_build/site/index.html (opens from disk, no server)
    python docs/build.py --out DIR             # another output folder
    python docs/build.py --only 07 12          # the index and some chapters (a quick look while writing)

The site is MkDocs with the Material theme; mkdocs-jupyter renders the notebooks from their saved outputs
(nothing is executed). The notebooks are first copied into docs/_build/src/ with nbdev's conventions applied:
`#| hide` cells are left out, directive lines are dropped from the code shown, and a cell flagged `#| cuda`,
`#| multigpu` or `#| slow` gets a note saying that CI skips it and which GPU recorded its outputs.
Every script, style, font and formula is served by the site itself: KaTeX comes from the npm registry at
build time (docs/package.json), and a build whose pages would load anything from the network fails.
"""

from __future__ import annotations

import argparse, html, importlib, importlib.util, inspect, json, re, shutil, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NBS = ROOT / "nbs"
SKIP_FLAGS = {
    "cuda": "a GPU",
    "multigpu": "several GPUs",
    "slow": "minutes",
}  # nbdev test flags a reader is told of
DIRECTIVE = re.compile(r"^#\|\s*([\w-]+):?\s*(.*)$")
GPU_NAME = re.compile(r"NVIDIA [A-Z]\d+(?: \d+GB)?(?: HBM\d\w*)?")


def _slides_build():
    "slides/build.py as a module: its npm install, deck build and Chromium helpers."
    spec = importlib.util.spec_from_file_location("slides_build", ROOT / "slides" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["slides_build"] = mod  # (its dataclasses look their module up)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------------------------- notebooks


def directives(src: str) -> tuple[dict[str, str], str]:
    "The cell's leading `#| name value` lines as {name: value}, and the source without them."
    lines, found = src.split("\n"), {}
    while lines and (m := DIRECTIVE.match(lines[0].strip())):
        found[m.group(1)] = m.group(2).strip()
        lines.pop(0)
    return found, "\n".join(lines).strip("\n")


def _text(outputs: list[dict]) -> str:
    "All the text of a cell's outputs (streams, plain text, markdown)."
    parts = []
    for o in outputs:
        parts.append("".join(o.get("text", "")))
        for kind in ("text/plain", "text/markdown"):
            parts.append("".join(o.get("data", {}).get(kind, "")))
    return "\n".join(parts)


def _devices_in(value, depth: int = 0) -> list[str]:
    "GPU names under the keys 'device' of a JSON value (a results file's meta, its runs), outermost first."
    if depth > 4:
        return []
    if isinstance(value, dict):
        name = GPU_NAME.search(value["device"]) if isinstance(value.get("device"), str) else None
        own = [name.group(0)] if name else []
        return own + [d for v in value.values() for d in _devices_in(v, depth + 1)]
    if isinstance(value, list):
        return [d for v in value[:50] for d in _devices_in(v, depth + 1)]
    return []


def recorded_on(cell: dict, names: dict[str, str], data_dir: Path) -> tuple[list[str], list[str]]:
    "The GPUs that a flagged cell's outputs name (else its data files do), and the data files it writes."
    src = "".join(cell["source"])
    files = re.findall(r"data/[\w.-]+\.json", src)
    files += [f for name, f in names.items() if re.search(rf"\b{re.escape(name)}\b", src)]
    files = list(dict.fromkeys(files))
    gpus = GPU_NAME.findall(_text(cell.get("outputs", [])))
    for f in files:
        path = data_dir / f.removeprefix("data/")
        if not gpus and path.exists():
            gpus = _devices_in(json.loads(path.read_text(encoding="utf-8")))[:1]
    return list(dict.fromkeys(gpus)), files


def flag_note(flag: str, gpus: list[str], files: list[str], has_output: bool) -> str:
    "The note shown above a cell that CI skips."
    where = " and ".join(f"`{f}`" for f in files)
    if flag == "slow":
        body = "CI skips this long cell (`#| slow`); " + (
            "its output below is as it was last run."
            if has_output
            else f"its results are in {where or 'the cells below'}."
        )
        return f'<div class="admonition note"><p class="admonition-title">Long cell</p><p>{body}</p></div>'
    on = " and ".join(gpus) if gpus else "a GPU (the device was not recorded)"
    body = f"This cell needs {SKIP_FLAGS[flag]} (`#| {flag}`), so the CPU path and CI skip it. "
    body += (
        f"Its output below was recorded on {on}."
        if has_output
        else (
            f"It ran on {on} and saved its measurements to {where}; the cells below read them on any machine."
            if where
            else f"It ran on {on}."
        )
    )
    return (
        f'<div class="admonition info gpu-cell"><p class="admonition-title">GPU cell</p><p>{body}</p></div>'
    )


def _markdown_cell(src: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": src}


def site_links(md: str) -> str:
    "Links to notebooks, as the README writes them (nbs/NN.ipynb) or chapters do (NN.ipynb), to site pages."
    return re.sub(
        r"\]\((?:nbs/)?([\w-]+)\.ipynb(#[\w-]+)?\)", lambda m: f"]({m.group(1)}.html{m.group(2) or ''})", md
    )


def stage_notebook(path: Path, out: Path, decks: set[str], modules: set[str]) -> dict:
    "Copy one notebook into the site's sources with nbdev's conventions applied; returns what the page shows."
    nb = json.loads(path.read_text(encoding="utf-8"))
    names = {}  # NAME = Path("data/….json") anywhere in the notebook: what a flagged cell may mean by NAME
    for c in nb["cells"]:
        for name, f in re.findall(r"^(\w+) = Path\(\"(data/[\w.-]+\.json)\"\)", "".join(c["source"]), re.M):
            names[name] = f
    exports = [directives("".join(c["source"]))[0].get("default_exp") for c in nb["cells"]]
    module = next((m for m in exports if m), None)
    cells, flagged, title = [], [], None
    for c in nb["cells"]:
        found, body = directives("".join(c["source"]))
        if "hide" in found or (c["cell_type"] == "code" and not body):
            continue
        if c["cell_type"] == "markdown":
            body = site_links(body)
            if title is None and (m := re.match(r"# (.+)", body)):  # the chapter's links go under its title
                title = m.group(1).strip()
                body = f"{m.group(0)}\n\n{chapter_links(path.stem, module, decks, modules)}{body[m.end() :]}"
            cells.append(_markdown_cell(body))
            continue
        flag = next((f for f in SKIP_FLAGS if f in found), None)
        if flag:
            gpus, files = recorded_on(c, names, path.parent / "data")
            cells.append(_markdown_cell(flag_note(flag, gpus, files, bool(c.get("outputs")))))
            flagged.append({"cell": c.get("id"), "flag": flag, "gpus": gpus, "files": files})
        if c["cell_type"] == "code":
            c = {**c, "source": body, "execution_count": None}
        cells.append(c)
    nb = {**nb, "cells": cells, "metadata": {"kernelspec": nb.get("metadata", {}).get("kernelspec", {})}}
    (out / path.name).write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")
    return {"name": path.stem, "title": title or path.stem, "module": module, "flagged": flagged}


def chapter_links(stem: str, module: str | None, decks: set[str], modules: set[str]) -> str:
    "The line under a chapter's title: its deck and its module's API page (a notebook page links to .html)."
    links = []
    if stem in decks:
        links.append(f"[Slides]({'slides/' + stem}.html)")
    if module and module in modules:
        links.append(f"[API: `llmcourse.{module}`](api/{module}.html)")
    links.append(f"Notebook: `nbs/{stem}.ipynb`")
    return " · ".join(links) if stem != "index" else "[API](api/index.html) · [Slides](slides/index.html)"


# ---------------------------------------------------------------------------------------------- API pages


def _doc(obj, name: str) -> str:
    "nbdev's show_doc markdown for one function or class (signature with a comment per parameter, docstring)."
    from nbdev.showdoc import BasicMarkdownRenderer

    md = BasicMarkdownRenderer(obj, name=name)._repr_markdown_()
    md = re.sub(r"^\[source\]\(.*$\n?", "", md, flags=re.M)  # a link to a line number nbdev cannot know here
    return md.strip().removeprefix("---").strip()


def api_page(module: str, chapter: dict | None) -> str:
    "Markdown for one module: each name in its __all__, functions and classes as nbdev's show_doc shows them."
    mod = importlib.import_module(f"llmcourse.{module}")
    head = f"# `llmcourse.{module}`\n\n"
    if chapter:
        link = f"[{chapter['title']}](../{chapter['name']}.ipynb)"
        head += f"Exported from chapter {link}, where each name is taught.\n\n"
    consts, docs = [], []
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            docs.append(_doc(obj, name))
            if inspect.isclass(obj):
                for m, f in vars(obj).items():
                    if inspect.isfunction(f) and not m.startswith("_") and f.__doc__:
                        docs.append(_doc(f, f"{name}.{m}"))
        else:
            value = repr(obj)
            value = value if len(value) <= 90 else value[:87] + "…"
            value = html.escape(value).replace("|", "&#124;")  # raw HTML: a value may hold '<' or '|'
            consts.append(f"| `{name}` | `{type(obj).__name__}` | <code>{value}</code> |")
    if consts:
        head += "## Constants\n\n| name | type | value |\n|---|---|---|\n" + "\n".join(consts) + "\n\n"
    return head + "## Functions and classes\n\n" + "\n\n---\n\n".join(docs) + "\n"


# ---------------------------------------------------------------------------------------------- the site

KATEX_INIT = """// Render the TeX of every page ($…$, $$…$$) with the site's own KaTeX, on each page load.
function renderMath() {
  renderMathInElement(document.body, {
    delimiters: [
      {left: "$$", right: "$$", display: true}, {left: "$", right: "$", display: false},
      {left: "\\\\[", right: "\\\\]", display: true}, {left: "\\\\(", right: "\\\\)", display: false},
    ],
    // code is left as it is, and so is the copy of it that the copy button copies
    ignoredClasses: ["clipboard-copy-txt", "jp-CodeCell", "highlight"],
    throwOnError: true,
  });
}
if (typeof document$ !== "undefined") document$.subscribe(renderMath);
else addEventListener("DOMContentLoaded", renderMath);
"""

COURSE_CSS = """/* The notebook pages inside Material's layout. */
.jupyter-wrapper .jp-OutputArea-output pre { font-size: 0.75rem; }
.jupyter-wrapper .jp-RenderedImage img { max-width: 100%; height: auto; }
.gpu-cell { border-left-color: #7b1fa2; }
"""


def mkdocs_config(src: Path, site: Path, pages: list[dict], modules: list[str], decks: bool) -> dict:
    nav = [{"Home": "index.ipynb"}]
    nav.append({"Chapters": [{p["title"]: f"{p['name']}.ipynb"} for p in pages if p["name"] != "index"]})
    nav.append({"API": ["api/index.md"] + [{f"llmcourse.{m}": f"api/{m}.md"} for m in modules]})
    if decks:
        nav.append({"Slides": "slides/index.html"})
    return {
        "site_name": "llmcourse",
        "site_description": "Pre-training large language models, notebook by notebook",
        "docs_dir": str(src),
        "site_dir": str(site),
        "use_directory_urls": False,  # pages open from disk (the offline plugin)
        "theme": {
            "name": "material",
            "font": False,  # no web fonts from the network: the system's fonts
            "features": ["navigation.sections", "navigation.top", "search.highlight", "content.code.copy"],
        },
        "plugins": [
            "search",
            "offline",  # search and navigation work from file://
            {
                "mkdocs-jupyter": {
                    "include": ["*.ipynb"],
                    "include_requirejs": False,
                    "no_prompt": True,  # no "In [ ]:" beside each cell (nbdev_clean drops the counts)
                    "cache": False,
                    "toc_depth": 3,
                    "highlight_extra_classes": "highlight",
                }
            },
        ],
        "markdown_extensions": [
            "admonition",
            "tables",
            "attr_list",
            "toc",
            "pymdownx.superfences",
            {"pymdownx.arithmatex": {"generic": True}},
        ],
        "extra_css": ["assets/katex/katex.min.css", "assets/course.css"],
        "extra_javascript": [
            "assets/katex/katex.min.js",
            "assets/katex/contrib/auto-render.min.js",
            "assets/katex-init.js",
        ],
        "extra": {"polyfills": ["assets/iframe-worker-shim.js"]},  # search from file://, served by the site
        "hooks": [str(HERE / "hooks.py")],
        "nav": nav,
        "validation": {
            "nav": {"omitted_files": "warn", "not_found": "warn"},
            "links": {"not_found": "warn", "absolute_links": "warn", "unrecognized_links": "warn"},
        },
    }


def npm_install() -> Path:
    "Install KaTeX and iframe-worker from the npm registry (docs/package.json) unless they are already here."
    modules = HERE / "node_modules"
    if (modules / "katex" / "dist").exists() and (modules / "iframe-worker" / "shim").exists():
        return modules
    if not shutil.which("npm"):
        sys.exit(
            "docs/build.py needs npm (Debian: apt-get install nodejs npm) to install KaTeX and iframe-worker"
        )
    r = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"],
        cwd=HERE,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        sys.exit(f"npm install in docs/ failed:\n{r.stderr}")
    return modules


def build(out: Path, only: list[str] | None = None) -> dict:
    "Stage the sources, build decks and KaTeX, run MkDocs (strict). Returns a summary of what was built."
    t0 = time.time()
    work = HERE / "_build"
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    (src / "api").mkdir(parents=True)
    node_modules = npm_install()
    shutil.copytree(
        node_modules / "katex" / "dist",
        src / "assets" / "katex",
        ignore=shutil.ignore_patterns("*.mjs", "katex.js", "katex.css", "katex-swap*", "README.md"),
    )
    shutil.copy(
        node_modules / "iframe-worker" / "shim" / "index.js", src / "assets" / "iframe-worker-shim.js"
    )
    slides = _slides_build()
    (src / "assets" / "katex-init.js").write_text(KATEX_INIT, encoding="utf-8")
    (src / "assets" / "course.css").write_text(COURSE_CSS, encoding="utf-8")
    r = slides.main(["--no-pdf", "--out", str(src / "slides")] + (["--only", *only] if only else []))
    if r:
        sys.exit("the slide decks did not build")
    if only:  # the deck index lists what was built
        (src / "slides" / "index.html").write_text(
            slides.index_html(
                [
                    slides.parse_deck(p)
                    for p in sorted((slides.HERE / "src").glob("*.md"))
                    if (src / "slides" / f"{p.stem}.html").exists()
                ]
            ),
            encoding="utf-8",
        )
    decks = {p.stem for p in (src / "slides").glob("*.html")} - {"index"}
    notebooks = [NBS / "index.ipynb"] + sorted(
        p for p in NBS.glob("[0-9]*.ipynb") if not only or any(p.stem.startswith(o) for o in only)
    )
    all_modules = sorted(p.stem for p in (ROOT / "llmcourse").glob("*.py") if not p.stem.startswith("_"))
    module_of = {}
    for p in sorted(NBS.glob("[0-9]*.ipynb")):
        m = re.search(r'"#\| default_exp (\w+)', p.read_text(encoding="utf-8"))
        if m:
            module_of[m.group(1)] = p
    pages = [stage_notebook(p, src, decks, set(all_modules)) for p in notebooks]
    by_name = {p["name"]: p for p in pages}
    api_rows = []
    for m in all_modules:
        nb = module_of.get(m)
        chapter = by_name.get(nb.stem) if nb else None  # None: a chapter that --only left out
        (src / "api" / f"{m}.md").write_text(api_page(m, chapter), encoding="utf-8")
        api_rows.append(
            f"| [`llmcourse.{m}`]({m}.md) | "
            + (f"[{chapter['title']}](../{chapter['name']}.ipynb)" if chapter else "")
            + " |"
        )
    (src / "api" / "index.md").write_text(
        "# API\n\nEvery module of the `llmcourse` package, exported from the chapter that teaches it. "
        "Each page lists the module's functions and classes with their signatures, a comment per parameter "
        "and their docstrings.\n\n"
        "| module | chapter |\n|---|---|\n" + "\n".join(api_rows) + "\n",
        encoding="utf-8",
    )
    config = mkdocs_config(src, out, pages, all_modules, bool(decks))
    cfg_path = work / "mkdocs.yml"
    cfg_path.write_text(json.dumps(config, indent=1), encoding="utf-8")  # JSON is YAML
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-f", str(cfg_path)],
        capture_output=True,
        text=True,
        cwd=work,
    )
    if r.returncode != 0:
        sys.exit(f"mkdocs build failed:\n{r.stdout}{r.stderr}")
    (out / "404.html").unlink(
        missing_ok=True
    )  # a server's page (absolute paths); this site is read from disk
    summary = {
        "pages": len(pages) + len(all_modules) + 1,
        "notebooks": len(pages),
        "api_pages": len(all_modules),
        "decks": len(decks),
        "flagged_cells": sum(len(p["flagged"]) for p in pages),
        "seconds": round(time.time() - t0, 1),
        "site": str(out),
    }
    (out / "build.json").write_text(
        json.dumps(summary | {"flagged": {p["name"]: p["flagged"] for p in pages}}, indent=1),
        encoding="utf-8",
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out", default=str(HERE / "_build" / "site"), help="output folder (default docs/_build/site)"
    )
    p.add_argument(
        "--only", nargs="*", default=None, help="chapter numbers (e.g. 07 12): the index and these"
    )
    a = p.parse_args(argv)
    out = Path(a.out).resolve()
    s = build(out, a.only)
    print(
        f"{s['notebooks']} notebook pages, {s['api_pages']} API pages, {s['decks']} slide decks, "
        f"{s['flagged_cells']} cells labelled as skipped by CI; built in {s['seconds']} s"
    )
    print(f"open {out / 'index.html'} in a browser (no server needed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
