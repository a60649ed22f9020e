"The course website, built by docs/build.py: every page checked as files and in headless Chromium."

import html, html.parser, importlib.util, json, re, shutil, subprocess, sys, time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "nbs").glob("*.ipynb"))
MODULES = sorted(p.stem for p in (ROOT / "llmcourse").glob("*.py") if not p.stem.startswith("_"))
NO_BROWSER = (
    "Chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver): "
    "the browser checks did not run"
)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


docs = _load("docs_build", ROOT / "docs" / "build.py")


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    "The whole site built once, by the README's command, into a temporary folder."
    if not shutil.which("npm") and not (ROOT / "docs" / "node_modules" / "katex").exists():
        pytest.skip(
            "npm is not installed (Debian: apt-get install nodejs npm): no KaTeX to build the site with"
        )
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "build.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return out


@pytest.fixture(scope="session")
def browser():
    slides = docs._slides_build()
    found = slides.find_chromium()
    if not found:
        pytest.skip(NO_BROWSER)
    web = slides.chromium_driver(*found, width=1280, height=900)
    yield web
    web.quit()


def pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if "slides" not in p.relative_to(site).parts)


class _Refs(html.parser.HTMLParser):
    "Every href and src of a page, and the ids it defines."

    def __init__(self):
        super().__init__()
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        for k in ("href", "src"):
            if a.get(k):
                self.refs.append((tag, a, a[k]))


def _parse(path: Path) -> _Refs:
    p = _Refs()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_every_notebook_module_and_deck_has_a_page(site):
    for nb in NOTEBOOKS:
        assert (site / f"{nb}.html").exists(), nb
    for m in MODULES:
        page = (site / "api" / f"{m}.html").read_text(encoding="utf-8")
        assert f"llmcourse.{m}" in page
    decks = sorted(p.stem for p in (ROOT / "slides" / "src").glob("*.md"))
    for d in decks:
        assert (site / "slides" / f"{d}.html").exists(), d
        assert f'href="slides/{d}.html"' in (site / f"{d}.html").read_text(encoding="utf-8"), (
            f"{d}: no link to its deck"
        )
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    assert any("IsoFLOP" in d["text"] for d in index["docs"]), "the search index lacks the chapters' text"
    assert (site / "search" / "search_index.js").exists(), "no inlined index: search would not work from disk"


def test_api_page_shows_signatures_with_parameter_comments(site):
    "A function's entry is nbdev's show_doc: the signature with each parameter's comment, then the docstring."
    page = (site / "api" / "scaling.html").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", "", page)
    assert "isoflop_grid" in text
    assert "# compute budgets C (FLOPs, by 6ND)" in text.replace("&gt;", ">"), (
        "a parameter's comment is missing"
    )
    assert "The runs of an IsoFLOP sweep" in text, "the docstring is missing"


def test_notebook_conventions_carry_over(site):
    "#| hide cells are absent, other code is shown without directive lines, cells CI skips are labelled."
    built = json.loads((site / "build.json").read_text(encoding="utf-8"))
    for nb in NOTEBOOKS:
        cells = json.loads((ROOT / "nbs" / f"{nb}.ipynb").read_text(encoding="utf-8"))["cells"]
        page = (site / f"{nb}.html").read_text(encoding="utf-8")
        codes = [
            html.unescape(c)
            for c in re.findall(r'<div class="clipboard-copy-txt"[^>]*>(.*?)</div>', page, re.S)
        ]
        shown = "\n".join(codes)  # every code cell shown, as its copy button copies it
        assert not re.search(r"^#\| (export|hide|default_exp|cuda|slow)\b", shown, re.M), (
            f"{nb}: a directive line is shown"
        )
        flagged = 0
        for c in cells:
            found, body = docs.directives("".join(c["source"]))
            first = next((ln for ln in body.splitlines() if len(ln.strip()) > 25), None)
            if c["cell_type"] != "code" or not first:
                continue
            if "hide" in found:
                assert first.strip() not in shown, f"{nb}: a #| hide cell is shown"
            if any(f in found for f in docs.SKIP_FLAGS):
                flagged += 1
                gpus = docs.GPU_NAME.findall(docs._text(c.get("outputs", [])))
                entry = next(e for e in built["flagged"][nb] if e["cell"] == c["id"])
                assert set(gpus) <= set(entry["gpus"]), (nb, c["id"], gpus, entry)
        assert len(codes) == sum(
            c["cell_type"] == "code" and not ("hide" in d or not b)
            for c in cells
            for d, b in [docs.directives("".join(c["source"]))]
        ), nb
        assert (
            page.count('class="admonition-title">GPU cell<')
            + page.count('class="admonition-title">Long cell<')
            == flagged
        ), nb
    notes = [e for v in built["flagged"].values() for e in v if e["flag"] == "cuda"]
    assert notes and sum(bool(e["gpus"]) for e in notes) >= len(notes) - 1, (
        notes
    )  # one cell printed no device


def test_links_and_images_resolve_and_nothing_comes_from_the_network(site):
    problems = []
    ids = {}
    for page in pages(site):
        refs = _parse(page)
        ids[page] = refs.ids
        for tag, attrs, ref in refs.refs:
            if ref.startswith(("data:", "mailto:", "javascript:")):
                continue
            if re.match(
                r"(https?:)?//", ref
            ):  # a link to elsewhere is fine; loading a resource from there is not
                loads = tag in ("script", "img", "iframe", "source") or (
                    tag == "link" and attrs.get("rel") not in ("canonical", "alternate")
                )
                if loads:
                    problems.append(f"{page.relative_to(site)}: <{tag}> loads {ref} from the network")
                continue
            parts = urlsplit(ref)
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{page.relative_to(site)}: {ref} does not exist")
            elif parts.fragment and target.suffix == ".html" and "slides" not in target.parts:
                if target not in ids:  # parsed once (setdefault would parse it for every link)
                    ids[target] = _parse(target).ids
                if parts.fragment not in ids[target]:
                    problems.append(
                        f"{page.relative_to(site)}: {ref}: no id {parts.fragment!r} in {target.name}"
                    )
    assert not problems, "\n".join(problems[:30])


PROSE = """const a = (document.querySelector('article') || document.body).cloneNode(true);
    a.querySelectorAll('pre, code, script, style, .katex, .highlight, .jp-CodeCell, .clipboard-copy-txt')
      .forEach(e => e.remove());
"""  # the page's prose: what KaTeX renders (code and its copy for the copy button are left as they are)
TEX = r"/[$][$][^$]+[$][$]|[$][^$\s][^$]*?[$]/"  # $$…$$ or $…$ (one $ alone, as in $HOME, is not TeX)


@pytest.mark.parametrize("chunk", range(3))
def test_pages_in_chromium(site, browser, chunk):
    "Every page loads without a console error, its images load, its formulas render (no raw $…$ left)."
    problems = []
    for page in pages(site)[chunk::3]:
        browser.get_log("browser")
        browser.get(page.resolve().as_uri())
        deadline = time.time() + 20
        while time.time() < deadline:  # until loaded and, where the prose holds TeX, KaTeX has rendered it
            state = browser.execute_script(
                "return {ready: document.readyState, katex: document.querySelectorAll('.katex').length,"
                " images: [...document.images].map(i => i.complete && i.naturalWidth > 0)}"
            )
            has_math = bool(
                browser.execute_script(
                    PROSE + f"return {TEX}.test(a.textContent) || !!a.querySelector('.katex');"
                )
            )
            if state["ready"] == "complete" and (state["katex"] or not has_math):
                break
            time.sleep(0.1)
        raw = browser.execute_script(PROSE + f"return (a.textContent.match({TEX}g) || []).slice(0, 3);")
        name = page.relative_to(site)
        problems += [f"{name}: raw math left: {r[:60]!r}" for r in raw]
        problems += (
            [f"{name}: {state['images'].count(False)} image(s) did not load"]
            if not all(state["images"])
            else []
        )
        problems += [
            f"{name}: console: {e['message'][:200]}"
            for e in browser.get_log("browser")
            if e["level"] == "SEVERE"
        ]
        if has_math and not state["katex"]:
            problems.append(f"{name}: has TeX but KaTeX rendered nothing")
    assert not problems, "\n".join(problems)


def test_a_chapter_page_is_not_blank(site, browser):
    import numpy as np
    from io import BytesIO
    from PIL import Image

    browser.get((site / "12_scaling_laws.html").resolve().as_uri())
    time.sleep(1)
    title = browser.execute_script("return document.querySelector('article h1').textContent")
    assert "Scaling laws" in title
    shot = np.asarray(Image.open(BytesIO(browser.get_screenshot_as_png())).convert("L"), dtype=float)
    assert shot.std() > 20, "the screenshot is almost one colour"
    assert browser.execute_script("return document.querySelectorAll('.katex-display').length") >= 2


def test_search_works_from_disk(site, browser):
    "Search runs in a page opened as a file (its index inlined, its worker shimmed) and finds a chapter."
    from selenium.webdriver.common.by import By

    browser.get((site / "index.html").resolve().as_uri())
    browser.get_log("browser")
    box = browser.find_element(By.CSS_SELECTOR, "input.md-search__input")
    browser.execute_script(
        "document.querySelector('label.md-search__icon, .md-header__button[for=__search]')?.click()"
    )
    box.send_keys("IsoFLOP")
    deadline, hits = time.time() + 20, []
    while time.time() < deadline and not hits:
        hits = browser.execute_script(
            "return [...document.querySelectorAll('.md-search-result__link')]"
            ".map(a => a.getAttribute('href'))"
        )
        time.sleep(0.2)
    assert any("12_scaling_laws.html" in h for h in hits), hits
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_build_refuses_a_page_that_loads_from_the_network(tmp_path):
    "The hook that keeps the site offline names the page and the address."
    hooks = _load("docs_hooks", ROOT / "docs" / "hooks.py")
    from mkdocs.exceptions import PluginError

    class Page:
        class file:
            src_uri = "07_model.ipynb"

        class toc:
            items = []

    cleaned = hooks.on_page_content(
        '<p>x</p><script src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js"></script>',
        Page,
        {},
        [],
    )
    assert "cdnjs" not in cleaned
    with pytest.raises(PluginError, match=r"07_model.ipynb: the page would load https://example.org/x.js"):
        hooks.on_post_page('<script src="https://example.org/x.js"></script>', Page, {})
    assert hooks.on_post_page('<a href="https://example.org/">a link</a>', Page, {})
