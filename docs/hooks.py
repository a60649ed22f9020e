"""MkDocs hooks of the course site (docs/build.py names this file in its mkdocs.yml).

A notebook page made by nbconvert asks a CDN for MathJax and Mermaid; the site renders its formulas with its
own KaTeX and has no diagrams, so those scripts are removed. Its table of contents is made by another
converter than its headings, which slugs a heading with code in it differently: the contents are pointed at
the headings' real ids. After that, any page that would still load a script, style, image or font from the
network stops the build, naming the page and the address."""

import re

from mkdocs.exceptions import PluginError

CDN_SCRIPTS = [
    re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S),
    re.compile(r"<script[^>]*>[^<]*?(?:mermaid|MathJax)[\s\S]*?</script>", re.I),
    re.compile(
        r"<script[^>]+src=\"https?://[^\"]*(?:mathjax|mermaid|require)[^\"]*\"[^>]*>\s*</script>", re.I
    ),
]
REMOTE = re.compile(
    r"<(?:script|img|iframe|source)\b[^>]*\ssrc=\"((?:https?:)?//[^\"]+)\"|"
    r"<link\b[^>]*\shref=\"((?:https?:)?//[^\"]+)\"|@import\s+url\(\"?((?:https?:)?//[^\")]+)",
    re.I,
)


HEADING = re.compile(r"<h([1-6])\b[^>]*\sid=\"([^\"]+)\"")


def _links(items):
    for item in items:
        yield item
        yield from _links(item.children)


def on_page_content(html, page, config, files):
    for pattern in CDN_SCRIPTS:
        html = pattern.sub("", html)
    if page.file.src_uri.endswith(".ipynb"):  # each contents entry -> the next heading of its level, in order
        heads, i = [(int(level), hid) for level, hid in HEADING.findall(html)], 0
        for link in _links(page.toc.items):
            j = next((k for k in range(i, len(heads)) if heads[k][0] == link.level), None)
            if j is None:
                raise PluginError(f"{page.file.src_uri}: no heading of level {link.level} for {link.title!r}")
            link.id, i = heads[j][1], j + 1
    return html


def on_post_page(output, page, config):
    for m in REMOTE.finditer(output):
        link = m.group(0)
        if link.lower().startswith("<link") and re.search(r"rel=\"(?:canonical|alternate)\"", link):
            continue  # an address, not something the page loads
        url = next(g for g in m.groups() if g)
        raise PluginError(
            f"{page.file.src_uri}: the page would load {url} from the network; "
            "every script, style, image and font must come from the site"
        )
    return output
