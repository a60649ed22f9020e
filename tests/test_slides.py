"Slide decks: one per chapter, built by slides/build.py into self-contained HTML and a PDF, each opened in headless Chromium."
import importlib.util, io, re, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DECKS = sorted(p.stem for p in (ROOT / "slides" / "src").glob("*.md"))
NO_BROWSER = "Chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver): the browser checks did not run"


def _load_build():
    spec = importlib.util.spec_from_file_location("slides_build", ROOT / "slides" / "build.py")
    mod = importlib.util.module_from_spec(spec); sys.modules["slides_build"] = mod   # (its dataclasses look their module up)
    spec.loader.exec_module(mod)
    return mod

build = _load_build()


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    "Every deck built once, with PDFs where Chromium is installed (the README's command, into a temporary folder)."
    if not shutil.which("npm") and not (ROOT / "slides" / "node_modules" / "reveal.js").exists():
        pytest.skip("npm is not installed (Debian: apt-get install nodejs npm): reveal.js cannot be installed to build the decks")
    out = tmp_path_factory.mktemp("slides")
    r = subprocess.run([sys.executable, str(ROOT / "slides" / "build.py"), "--out", str(out)], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


@pytest.fixture(scope="session")
def browser():
    found = build.find_chromium()
    if not found: pytest.skip(NO_BROWSER)
    web = build.chromium_driver(*found)
    yield web
    web.quit()


def test_every_chapter_has_a_deck():
    chapters = {p.name[:2] for p in (ROOT / "nbs").glob("[0-9][0-9]*.ipynb")}
    decks = {d[:2] for d in DECKS}
    assert chapters - decks == set(), f"chapters without a deck in slides/src: {sorted(chapters - decks)}"
    assert decks - chapters == set(), f"decks without a chapter notebook: {sorted(decks - chapters)}"


def test_decks_are_self_contained(built):
    "Nothing is loaded from the network or from another file: every script, style and image is inline."
    for name in DECKS:
        page = (built / f"{name}.html").read_text(encoding="utf-8")
        markup = re.sub(r"<(script|style)>.*?</\1>", "", page, flags=re.S)      # the inlined code itself is checked in the browser
        refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', markup)
        external = [r for r in refs if not r.startswith(("data:", "#"))]
        assert external == [], f"{name}: external references {external[:5]}"
        assert "<link" not in markup and "@import" not in page, name
        assert "Reveal.initialize" in page and "MATHPLACEHOLDER" not in page, name


def test_figures_are_the_notebooks_outputs(built):
    "Each image on a slide is byte for byte the PNG its notebook cell holds now."
    total = 0
    for name in DECKS:
        deck = build.parse_deck(ROOT / "slides" / "src" / f"{name}.md")
        figs = build.notebook_figures(deck.notebook)
        page = (built / f"{name}.html").read_text(encoding="utf-8")
        imgs = re.findall(r'data-cell="([^"]+)" data-index="(\d+)" src="data:image/png;base64,([^"]+)"', page)
        assert imgs, f"{name} shows no figure"
        for cell, idx, data in imgs:
            assert data == figs[cell][int(idx) - 1], f"{name}: fig:{cell}/{idx} differs from the notebook's output"
        total += len(imgs)
    assert total >= len(DECKS)


def test_formulas_render_to_mathml(built):
    page = (built / "14_continued_pretraining.html").read_text(encoding="utf-8")
    assert page.count("<math") >= 3 and 'display="block"' in page
    assert "<mi>α</mi>" in page                        # \alpha became a MathML identifier


def test_build_names_the_problem(tmp_path):
    "A deck that cites a missing figure, or lacks its exercises, fails with the file and the slide named."
    src = tmp_path / "14_bad.md"
    src.write_text("---\ntitle: Bad\nnotebook: 14_continued_pretraining\n---\n\n## Live demo\n\nrun it\n\n---\n\n## Exercises\n\n"
                   "1. one\n\n---\n\n## A figure\n\n![x](fig:doesnotexist)\n", encoding="utf-8")
    with pytest.raises(build.DeckError, match=r"14_bad.md: slide 4: figure fig:doesnotexist"): build.build_html(build.parse_deck(src))
    src.write_text("---\ntitle: Bad\nnotebook: 14_continued_pretraining\n---\n\n## Live demo\n\nrun it\n", encoding="utf-8")
    with pytest.raises(build.DeckError, match="no slide headed 'Exercises"): build.build_html(build.parse_deck(src))
    src.write_text("---\ntitle: Bad\nnotebook: 14_continued_pretraining\n---\n\n## Live demo\n\n$\\frac{1}{$ broken\n\n---\n\n## Exercises\n\n"
                   "![f](fig:04f56ee2)\n", encoding="utf-8")
    with pytest.raises(build.DeckError, match="KaTeX could not render"): build.build_html(build.parse_deck(src))


def _pixels_summary(png: bytes) -> tuple[int, float]:
    "Distinct colours and the share of pixels that are not near-white, of a screenshot."
    import numpy as np
    from PIL import Image
    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB").resize((320, 180))).reshape(-1, 3)
    return len(np.unique(px, axis=0)), float((px.min(axis=1) < 230).mean())


@pytest.mark.parametrize("name", DECKS)
def test_deck_in_chromium(built, browser, name):
    "Every slide renders without console errors, fits 1280 × 720, has content and loaded images; screenshots are not blank."
    n = len(build.parse_deck(ROOT / "slides" / "src" / f"{name}.md").slides) + 1
    problems, shots = build.browser_check(browser, built / f"{name}.html", n)
    assert not problems, f"{name}: " + "; ".join(problems)
    assert len(shots) == n
    for src, png in shots:
        colours, ink = _pixels_summary(png)
        assert colours > 20 and ink > 0.01, f"{name}: the screenshot of slide {src} looks blank ({colours} colours, {ink:.1%} ink)"


def test_pdf_per_deck(built):
    if not build.find_chromium(): pytest.skip(NO_BROWSER)
    for name in DECKS:
        pdf = (built / f"{name}.pdf").read_bytes()
        pages = len(re.findall(rb"/Type\s*/Page(?!s)", pdf))
        n = len(build.parse_deck(ROOT / "slides" / "src" / f"{name}.md").slides) + 1
        assert pdf.startswith(b"%PDF") and pages == n, f"{name}.pdf: {pages} pages for {n} slides"
