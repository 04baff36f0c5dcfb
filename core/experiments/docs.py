"""The documents rendered from the stored result cards (docs/results/<name>/<name>.json, and the model
cards beside the checkpoints): docs/reproduction.md (each table's markdown plus the discussion, whose
figures are quoted from the cards), docs/validate.md, docs/autoattack.md, docs/smoothing.md, docs/certify.md,
docs/performance.md (from the benchmarks' cards in docs/results/performance/) and the README's marked blocks
(results at a glance, the model zoo). `intriguing reproduce NAME --update-docs` stores a card and calls `render_docs`;
`intriguing reproduce docs` re-renders without running anything."""

from __future__ import annotations

import re
from pathlib import Path

from core import config
from core.experiments import autoattack, quotes
from core.experiments.smoothing import smoothing_doc
from core.experiments.writer import RESULTS_DIR, read_card

TEMPLATES = Path(__file__).with_name("templates")
ORDER = ("table1", "table2", "table2-imagenet", "table3", "table4", "table5", "advtrain")
README_BLOCKS = ("results", "zoo")  # marked blocks of the README, each rendered from templates/<name>.md


def markers(block: str) -> tuple[str, str]:
    return (
        f"<!-- {block}:begin (rendered by `intriguing reproduce docs` from the stored cards) -->",
        f"<!-- {block}:end -->",
    )


HEADER = """# Reproducing the paper's tables

Every table below was written by `intriguing reproduce <table> --update-docs` (see each table's footer for
n, seed, time and threads; the full card, CSV and figure are in `docs/results/<table>/`). Cells read
"ours (paper)" or show the paper's number in the column beside ours. The discussion's figures are quoted
from the same cards. Re-render this file from the stored cards with `intriguing reproduce docs`.

"""


def _table(results: Path, name: str) -> str | None:
    """The markdown table a run wrote beside its card, or None."""
    path = results / name / f"{name}.md"
    return path.read_text() if path.is_file() else None


def reproduction_doc(results: Path = RESULTS_DIR) -> str:
    parts = [HEADER]
    for name in ORDER:
        table = results / name / f"{name}.md"
        if table.is_file():
            parts += [table.read_text(), f"\n![{name}](results/{name}/{name}.png)\n\n"]
        else:
            parts.append(f"### {name}\n\nNot run yet: `intriguing reproduce {name} --update-docs`.\n\n")
    parts.append(quotes.render(TEMPLATES / "discussion.md", lambda name: read_card(name, results)))
    return "".join(parts)


def readme_block(readme: str, block: str, text: str) -> str:
    """The README with the text between the markers of `block` replaced by `text`."""
    begin, end = markers(block)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(readme):
        raise ValueError(f"README.md has no {block} markers")
    return pattern.sub(lambda _: f"{begin}\n{text.rstrip()}\n{end}", readme)


def render_docs(results: Path = RESULTS_DIR, root: Path = config.PROJECT_ROOT) -> list[str]:
    """Rewrite the documents listed above under `root` from the cards in `results`; return the files
    written."""
    read = lambda name: read_card(name, results)  # noqa: E731
    written = []
    for path, text in (
        (root / "docs" / "reproduction.md", reproduction_doc(results)),
        (root / "docs" / "validate.md", quotes.render(TEMPLATES / "validate.md", read)),
        (root / "docs" / "autoattack.md", autoattack.doc(results)),
        (root / "docs" / "performance.md", quotes.render(TEMPLATES / "performance.md", read)),
        (
            root / "docs" / "smoothing.md",
            smoothing_doc(
                read("smoothing"), _table(results, "smoothing"), _table(results, "smoothing-imagenet")
            ),
        ),
        (root / "docs" / "certify.md", quotes.render(TEMPLATES / "certify.md", read)),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(str(path))
    readme = root / "README.md"
    if readme.is_file():
        text = readme.read_text()
        for block in README_BLOCKS:
            text = readme_block(text, block, quotes.render(TEMPLATES / f"{block}.md", read))
        readme.write_text(text)
        written.append(str(readme))
    return written
