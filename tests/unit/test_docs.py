"""The docs stay true to the tree: every docs/… file named anywhere exists, and every source
path the docs and README name (bootserverd/…, services/…, tests/… .py) is still there."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC_PATH = re.compile(r"(?<![\w./-])docs/[\w./-]*\w\.(?:md|png|svg|json|txt)")
SOURCE_PATH = re.compile(r"(?<![\w./-])(?:bootserverd|bootserverd_client|services|ldapsync|dhcp|tftp|nbd|tests|tools|client)"
                         r"/[\w./-]*\w\.(?:py|c|sh|service)\b")


def tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / line for line in out.splitlines() if (REPO / line).is_file()]


def mentions(pattern: re.Pattern, files) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in files:
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for match in pattern.findall(text):
            found.setdefault(match, []).append(str(path.relative_to(REPO)))
    return found


def test_every_docs_path_named_in_the_tree_exists():
    missing = {p: where for p, where in mentions(DOC_PATH, tracked()).items() if not (REPO / p).exists()}
    assert not missing, missing


def test_every_source_path_the_docs_name_exists():
    docs = [p for p in tracked() if p.suffix == ".md"]
    missing = {p: where for p, where in mentions(SOURCE_PATH, docs).items() if not (REPO / p).exists()}
    assert not missing, missing
