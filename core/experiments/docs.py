"""docs/reproduction.md, assembled from the stored results (docs/results/<table>/<table>.md) and the
discussion of the gaps, so that the document always shows what the command last measured."""

from __future__ import annotations

from pathlib import Path

from core import config
from core.experiments.report import RESULTS_DIR

DOC = config.PROJECT_ROOT / "docs" / "reproduction.md"
DISCUSSION = Path(__file__).with_name("discussion.md")
ORDER = ("table1", "table2", "table2-imagenet", "table3", "table4", "table5", "advtrain")

HEADER = """# Reproducing the paper's tables

Every table below was written by `intriguing reproduce <table>` (see each table's footer for n, seed, time
and threads; the full card, CSV and figure are in `docs/results/<table>/`). Cells read "ours (paper)" or
show the paper's number in the column beside ours. Regenerate this file with any `intriguing reproduce`
run whose output goes to the default folder.

"""


def write_reproduction_doc(results: Path = RESULTS_DIR, doc: Path = DOC) -> Path:
    parts = [HEADER]
    for name in ORDER:
        table = results / name / f"{name}.md"
        if table.is_file():
            parts += [table.read_text(), f"\n![{name}](results/{name}/{name}.png)\n\n"]
        else:
            parts.append(f"### {name}\n\nNot run yet: `intriguing reproduce {name}`.\n\n")
    if DISCUSSION.is_file():
        parts.append(DISCUSSION.read_text())
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("".join(parts))
    return doc
