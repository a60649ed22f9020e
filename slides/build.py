#!/usr/bin/env python3
"""Build the classroom slide decks: slides/src/NN_name.md -> self-contained reveal.js HTML, and a PDF of each.

    python slides/build.py                  # every deck -> slides/build/NN_name.html (+ .pdf when Chromium is here)
    python slides/build.py --only 07 14     # some decks
    python slides/build.py --no-pdf         # HTML only
    python slides/build.py --figures 14     # list the figure cells of notebook 14, to cite them in a deck

reveal.js and KaTeX are installed at build time from the npm registry into slides/node_modules (never
committed). Every script, style, font, formula and figure is inlined, so a deck opens from disk with no
network. Formulas are rendered to MathML by KaTeX here, at build time. Figures are the PNG outputs of the
notebooks' cells, cited by cell id, so a deck shows exactly what its notebook last produced.
The deck format is described in slides/README.md.
"""
from __future__ import annotations

import argparse, base64, html, json, re, shutil, subprocess, sys
from dataclasses import dataclass, field
from pathlib import Path

import markdown

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NODE_MODULES = HERE / "node_modules"
REVEAL = NODE_MODULES / "reveal.js" / "dist"
REQUIRED_HEADINGS = ("Live demo", "Exercises")    # every deck has a slide whose heading starts with each


class DeckError(ValueError):
    "A problem in a deck's source, located by file and slide."
    def __init__(self, path: Path, slide: int | None, reason: str):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}" + (f": slide {slide}" if slide else "")
        super().__init__(f"{where}: {reason}")


@dataclass
class Deck:
    path: Path                                   # the source, slides/src/NN_name.md
    meta: dict                                   # front matter: title, notebook, subtitle
    slides: list[str] = field(default_factory=list)   # Markdown of each slide, in order

    @property
    def name(self) -> str: return self.path.stem
    @property
    def notebook(self) -> Path: return ROOT / "nbs" / f"{self.meta['notebook']}.ipynb"


# ---------------------------------------------------------------------------------------------- parsing

def parse_deck(path: Path) -> Deck:
    "Front matter between the first two '---' lines (key: value), then slides separated by lines that are only '---'."
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != "---": raise DeckError(path, None, "must start with a front matter block opened by '---'")
    try: end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration: raise DeckError(path, None, "the front matter block is not closed by '---'") from None
    meta = {}
    for n, line in enumerate(lines[1:end], 2):
        if not line.strip(): continue
        if ":" not in line: raise DeckError(path, None, f"line {n}: front matter lines are 'key: value', got {line!r}")
        k, v = line.split(":", 1); meta[k.strip()] = v.strip()
    for k in ("title", "notebook"):
        if not meta.get(k): raise DeckError(path, None, f"front matter lacks {k!r}")
    slides, cur, fenced = [], [], False
    for line in lines[end + 1:]:
        if line.lstrip().startswith("```"): fenced = not fenced
        if line.strip() == "---" and not fenced: slides.append("\n".join(cur)); cur = []
        else: cur.append(line)
    slides.append("\n".join(cur))
    deck = Deck(path, meta, [s.strip("\n") for s in slides if s.strip()])
    if not deck.notebook.exists(): raise DeckError(path, None, f"notebook {deck.notebook.relative_to(ROOT)} does not exist")
    return deck


# ---------------------------------------------------------------------------------------------- figures

def notebook_figures(nb_path: Path) -> dict[str, list[str]]:
    "cell id -> the base64 PNGs among its outputs, in order."
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    out = {}
    for c in nb["cells"]:
        pngs = [o["data"]["image/png"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        if pngs: out[c["id"]] = ["".join(p) if isinstance(p, list) else p for p in pngs]
    return out

def list_figures(chapter: str):
    "Print the cells of a chapter's notebooks that hold figures: id, count, first line of the cell."
    for nb_path in sorted((ROOT / "nbs").glob(f"{chapter}*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        print(nb_path.relative_to(ROOT))
        for c in nb["cells"]:
            n = sum("image/png" in o.get("data", {}) for o in c.get("outputs", []))
            if n: print(f"  fig:{c['id']}  ({n} image{'s' * (n > 1)})  {''.join(c['source']).splitlines()[0][:90]}")


# ---------------------------------------------------------------------------------------------- rendering

_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)
_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$(?!\d)", re.S)

def extract_math(text: str, formulas: list) -> str:
    "Replace $$display$$ and $inline$ TeX outside code by placeholders; append (tex, display) to formulas."
    def sub(m):
        formulas.append((m.group(1).strip(), True) if m.group(1) is not None else (m.group(2), False))
        return f"MATHPLACEHOLDER{len(formulas) - 1}X"
    return "".join(part if i % 2 else _MATH.sub(sub, part) for i, part in enumerate(_CODE.split(text)))

def render_math(formulas: list, path: Path) -> list[str]:
    "MathML for each (tex, display), rendered by KaTeX in one Node process."
    if not formulas: return []
    r = subprocess.run(["node", str(HERE / "render_math.cjs")], input=json.dumps(formulas), capture_output=True, text=True, cwd=HERE)
    if r.returncode != 0: raise DeckError(path, None, f"KaTeX could not render: {r.stderr.strip()}")
    return json.loads(r.stdout)

def slide_html(md_text: str, deck: Deck, k: int, figures: dict, formulas: list) -> str:
    "One slide's <section>: Markdown to HTML, figures inlined from the notebook, speaker notes after 'Note:'."
    body, _, notes = md_text.partition("\nNote:")
    html_body = markdown.markdown(extract_math(body, formulas), extensions=["tables", "fenced_code", "sane_lists"])
    def fig(m):
        alt, cell, idx = html.unescape(m.group(1)), m.group(2), int(m.group(3) or 1)
        if cell not in figures: raise DeckError(deck.path, k, f"figure fig:{cell}: {deck.notebook.relative_to(ROOT)} has no cell {cell} with an image "
                                                       f"(list them with: python slides/build.py --figures {deck.name[:2]})")
        if idx > len(figures[cell]): raise DeckError(deck.path, k, f"figure fig:{cell}/{idx}: that cell has {len(figures[cell])} image(s)")
        cap = f"<figcaption>{html.escape(alt)}</figcaption>" if alt else ""
        return (f'<figure><img alt="{html.escape(alt)}" data-cell="{cell}" data-index="{idx}" '
                f'src="data:image/png;base64,{figures[cell][idx - 1]}">{cap}</figure>')
    html_body = re.sub(r'<p><img alt="([^"]*)" src="fig:([0-9a-zA-Z_-]+)(?:/(\d+))?" ?/?></p>', fig, html_body)
    if 'src="fig:' in html_body: raise DeckError(deck.path, k, "a fig: image must stand alone in its paragraph")
    if re.search(r'<img[^>]+src="(?!data:)', html_body): raise DeckError(deck.path, k, "images must be notebook figures (fig:CELL_ID)")
    aside = f'<aside class="notes">{markdown.markdown(notes.strip())}</aside>' if notes.strip() else ""
    return f'<section data-source-slide="{k}">\n{html_body}\n{aside}</section>'

def check_deck(deck: Deck, figures: dict):
    "The course's rules for a deck: a live-demo slide, an exercises slide, at least one of its notebook's figures."
    heads = [re.match(r"#+\s*(.*)", s.lstrip()).group(1) for s in deck.slides if re.match(r"#+\s", s.lstrip())]
    for h in REQUIRED_HEADINGS:
        if not any(x.startswith(h) for x in heads): raise DeckError(deck.path, None, f"no slide headed '{h}…'")
    if figures and not any("](fig:" in s for s in deck.slides): raise DeckError(deck.path, None, "the notebook has figures but the deck shows none")

def read_asset(path: Path) -> str:
    if not path.exists(): raise FileNotFoundError(f"{path} is missing: the npm install of slides/package.json did not complete")
    return path.read_text(encoding="utf-8")

def inline_js(src: str) -> str: return src.replace("</script", "<\\/script")

def build_html(deck: Deck) -> str:
    "The deck as one self-contained HTML file."
    figures, formulas = notebook_figures(deck.notebook), []
    check_deck(deck, figures)
    sections = [slide_html(s, deck, k, figures, formulas) for k, s in enumerate(deck.slides, 2)]   # slide 1 is the title
    mathml = render_math(formulas, deck.path)
    body = re.sub(r"MATHPLACEHOLDER(\d+)X", lambda m: mathml[int(m.group(1))], "\n".join(sections))
    m = deck.meta
    chapter = deck.name.split("_")[0]
    title = (f'<section class="title-slide" data-source-slide="1"><p class="kicker">llmcourse · chapter {html.escape(chapter)}</p>'
             f'<h1>{html.escape(m["title"])}</h1>' + (f'<p class="subtitle">{html.escape(m["subtitle"])}</p>' if m.get("subtitle") else "")
             + f'<p class="source">notebook <code>nbs/{html.escape(m["notebook"])}.ipynb</code></p></section>')
    css = "\n".join(read_asset(p) for p in (REVEAL / "reveal.css", REVEAL / "theme" / "white.css", HERE / "course.css"))
    js = "\n".join(inline_js(read_asset(p)) for p in (REVEAL / "reveal.js", REVEAL / "plugin" / "notes.js"))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(chapter + " · " + m["title"])}</title>
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<meta name="generator" content="llmcourse slides/build.py from slides/src/{deck.path.name}">
<style>
{css}
</style>
</head>
<body>
<div class="reveal"><div class="slides">
{title}
{body}
</div></div>
<script>
{js}
</script>
<script>
Reveal.initialize({{hash: true, slideNumber: "c/t", width: 1280, height: 720, margin: 0.04, transition: "none", plugins: [RevealNotes]}});
</script>
</body>
</html>
"""

def index_html(decks: list[Deck]) -> str:
    rows = "\n".join(f'<li><a href="{d.name}.html">{html.escape(d.name[:2])} · {html.escape(d.meta["title"])}</a></li>' for d in decks)
    return f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>llmcourse slides</title></head>\n<body><h1>llmcourse slides</h1>\n<ul>\n{rows}\n</ul></body></html>\n'


# ---------------------------------------------------------------------------------------------- tools

def ensure_node_modules():
    "Install reveal.js and KaTeX from the npm registry (slides/package.json) unless they are already here."
    if (REVEAL / "reveal.js").exists() and (NODE_MODULES / "katex").exists(): return
    if not shutil.which("npm"): sys.exit("slides/build.py needs npm (Debian: apt-get install nodejs npm) to install reveal.js and KaTeX")
    r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"], cwd=HERE, capture_output=True, text=True)
    if r.returncode != 0: sys.exit(f"npm install in slides/ failed:\n{r.stderr}")

def find_chromium() -> tuple[str, str] | None:
    "(browser, driver) paths of Chromium and its WebDriver, or None."
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None

def chromium_driver(browser: str, driver: str, width: int = 1280, height: int = 720):
    "A headless Chromium under Selenium that keeps the page's console messages (for the tests and the PDF export)."
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions(); opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                "--force-device-scale-factor=1", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    web = webdriver.Chrome(options=opts, service=Service(driver))
    web.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    return web

def print_pdf(web, html_path: Path, pdf_path: Path, n_slides: int, timeout: float = 30.0):
    "Print a deck with reveal.js's print layout: one page per slide (reveal.js sizes the page: the slide plus its margin)."
    import time
    from selenium.webdriver.common.print_page_options import PrintOptions
    web.get(html_path.resolve().as_uri() + "?print-pdf")
    deadline = time.time() + timeout
    while web.execute_script("return document.querySelectorAll('.pdf-page').length") < n_slides:
        if time.time() > deadline: raise RuntimeError(f"{html_path.name}: reveal.js did not lay out {n_slides} print pages in {timeout:.0f} s")
        time.sleep(0.1)
    po = PrintOptions(); po.page_width, po.page_height = 1280 / 96 * 2.54, 720 / 96 * 2.54    # centimetres
    po.margin_top = po.margin_bottom = po.margin_left = po.margin_right = 0; po.background = True; po.shrink_to_fit = False
    pdf_path.write_bytes(base64.b64decode(web.print_page(po)))


def browser_check(web, html_path: Path, n_slides: int, timeout: float = 20.0) -> tuple[list[str], list[tuple[str, bytes]]]:
    "Open a deck and visit every slide: problems found (overflow, empty slide, image not loaded, console error) and screenshots."
    import time
    web.get_log("browser")                                        # drop the messages of earlier pages
    web.get(html_path.resolve().as_uri())
    deadline = time.time() + timeout
    while not web.execute_script("return !!(window.Reveal && Reveal.isReady())"):
        if time.time() > deadline: return [f"reveal.js did not start within {timeout:.0f} s"], []
        time.sleep(0.05)
    n = web.execute_script("return Reveal.getTotalSlides()")
    problems = [] if n == n_slides else [f"{n} slides in the page, {n_slides} in the source"]
    shots = []
    for i in range(n):
        info = web.execute_script("""
            Reveal.slide(arguments[0], 0); const s = Reveal.getCurrentSlide();
            const imgs = [...s.querySelectorAll('img')];
            return {overflow: s.scrollHeight - Reveal.getConfig().height, text: s.innerText.trim().length,
                    images: imgs.length, broken: imgs.filter(im => !(im.complete && im.naturalWidth > 0)).length,
                    source: s.dataset.sourceSlide};""", i)
        if info["overflow"] > 2: problems.append(f"slide {info['source']} overflows its frame by {info['overflow']} px")
        if info["text"] == 0 and info["images"] == 0: problems.append(f"slide {info['source']} is empty")
        if info["broken"]: problems.append(f"slide {info['source']} has {info['broken']} image(s) that did not load")
        shots.append((info["source"], web.get_screenshot_as_png()))
    problems += [f"console error: {e['message']}" for e in web.get_log("browser") if e["level"] == "SEVERE"]
    return problems, shots


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=None, help="chapter numbers (e.g. 07 14) or deck names to build")
    p.add_argument("--out", default=str(HERE / "build"), help="output folder (default slides/build)")
    p.add_argument("--no-pdf", action="store_true", help="skip the PDF export")
    p.add_argument("--figures", metavar="CHAPTER", help="list the figure cells of a chapter's notebooks and exit")
    p.add_argument("--check", action="store_true", help="open each deck in headless Chromium, report problems, save screenshots to OUT/shots/")
    a = p.parse_args(argv)
    if a.figures: list_figures(a.figures); return 0
    srcs = sorted((HERE / "src").glob("*.md"))
    if a.only: srcs = [s for s in srcs if any(s.stem == o or s.stem.split("_")[0] == o for o in a.only)]
    if not srcs: sys.exit("no deck to build (slides/src/*.md)")
    ensure_node_modules()
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    chromium = None if a.no_pdf else find_chromium()
    if not a.no_pdf and not chromium: print("no Chromium + chromedriver: HTML only (Debian: apt-get install chromium chromium-driver)", file=sys.stderr)
    web = chromium_driver(*chromium) if chromium else None
    decks, failed = [], False
    if a.check and not web: sys.exit("--check needs Chromium and chromedriver")
    try:
        for src in srcs:
            try: deck = parse_deck(src); page = build_html(deck)
            except DeckError as e: sys.exit(f"error: {e}")
            (out / f"{deck.name}.html").write_text(page, encoding="utf-8"); decks.append(deck)
            if web: print_pdf(web, out / f"{deck.name}.html", out / f"{deck.name}.pdf", len(deck.slides) + 1)
            print(f"{deck.name}: {len(deck.slides) + 1} slides -> {out / deck.name}.html" + (" + .pdf" if web else ""))
            if a.check and web:
                problems, shots = browser_check(web, out / f"{deck.name}.html", len(deck.slides) + 1)
                (out / "shots").mkdir(exist_ok=True)
                for src, png in shots: (out / "shots" / f"{deck.name}_{int(src):02d}.png").write_bytes(png)
                print("\n".join(f"  problem: {x}" for x in problems) or "  checked in Chromium: no problem", f"(screenshots in {out / 'shots'})")
                failed = failed or bool(problems)
    finally:
        if web: web.quit()
    if not a.only: (out / "index.html").write_text(index_html(decks), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
