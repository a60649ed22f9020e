"""Package metadata for llmcourse, read from settings.ini (the nbdev project file)."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).parent
ini = ConfigParser(delimiters=["="])
ini.read(here / "settings.ini", encoding="utf-8")
cfg = ini["DEFAULT"]

licenses = {"apache2": ("Apache Software License 2.0", "License :: OSI Approved :: Apache Software License")}
lic_name, lic_classifier = licenses[cfg["license"]]
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable"]
readme = here / "README.md"

# Optional parts: [notebooks] to step through the course in JupyterLab, [eval] for
# lm-evaluation-harness, [hf] for Hugging Face datasets as sources, [scale] for the data stages on Ray,
# [dev] for everything the tests need (all of the others included).
extras = {name: cfg[f"{name}_requirements"].split() for name in ("notebooks", "eval", "hf", "scale", "docs")}
extras["dev"] = sorted(set(sum(extras.values(), []) + cfg["dev_requirements"].split()))

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=readme.read_text(encoding="utf-8") if readme.exists() else "",
    long_description_content_type="text/markdown",
    author=cfg["author"],
    author_email=cfg["author_email"],
    url=cfg["git_url"],
    license=lic_name,
    keywords=cfg["keywords"].split(),
    classifiers=[
        f"Development Status :: {statuses[int(cfg['status']) - 1]}",
        f"Intended Audience :: {cfg['audience']}",
        lic_classifier,
        f"Natural Language :: {cfg['language']}",
        f"Programming Language :: Python :: {cfg['min_python']}",
    ],
    python_requires=f">={cfg['min_python']}",
    packages=setuptools.find_packages(include=[cfg["lib_path"], cfg["lib_path"] + ".*"]),
    include_package_data=True,
    install_requires=cfg["requirements"].split(),
    extras_require=extras,
    entry_points={
        "console_scripts": cfg["console_scripts"].split(),
        "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
    },
    zip_safe=False,
)
