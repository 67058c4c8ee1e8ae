"""One version: llmfleet.__version__. Everything that repeats it (the package metadata, the chart, the default
gateway image, the README's and Dockerfile's image tags, the CHANGELOG's latest release) says the same."""

from __future__ import annotations

import re
import tomllib

import yaml

from llmfleet import __version__
from llmfleet.api.v1alpha1 import DEFAULT_LLMFLEET_IMAGE
from tests.conftest import ROOT

IMAGE = re.compile(r"ghcr\.io/llmfleet/llmfleet:([0-9][0-9A-Za-z.+-]*)")


def test_the_package_reads_its_version_from_the_module() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "llmfleet.__version__"}


def test_the_chart_and_the_default_image_carry_the_version() -> None:
    chart = yaml.safe_load((ROOT / "charts" / "llmfleet" / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (__version__, __version__)
    assert DEFAULT_LLMFLEET_IMAGE.endswith(f":{__version__}")


def test_docs_name_the_current_image_tag() -> None:
    for name in ("README.md", "Dockerfile", "CONTRIBUTING.md"):
        tags = set(IMAGE.findall((ROOT / name).read_text()))
        assert tags <= {__version__}, f"{name} names {sorted(tags)}; the version is {__version__}"


def test_the_changelog_has_an_entry_for_the_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[?{re.escape(__version__)}\]?", text, re.M), (
        "no CHANGELOG section for the version"
    )
