"""Every code block of README.md and docs/ runs, or says why not.

Python blocks (fenced ``python``) run in page order, in one namespace per page, in a fresh empty working folder, as a
reader pasting them one after the other would run them. A block that cannot run here (it needs a dataset, a GPU, a
download) has ``<!-- not run: the reason -->`` on the line before its fence, and the page says so in its text.

Shell blocks (``bash``, ``sh``, ``console``) name what runs them: ``<!-- run by: tests/<file>.py::<test> -->`` (a test
that runs that command through the same entry point) or ``<!-- not run: the reason -->`` (real data, a GPU, hours).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
MARK = re.compile(r"<!--\s*(?P<kind>run by|not run):\s*(?P<what>.+?)\s*-->")
SHELL = ("bash", "sh", "shell", "console")


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    mark: tuple[str, str] | None  # ("run by" | "not run", what), from the line before the fence


def page_blocks(page: Path, text: str | None = None) -> list[Block]:
    text = page.read_text() if text is None else text
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = [row for row in text[:match.start()].splitlines() if row.strip()]
        mark = MARK.search(before[-1]) if before else None
        indent = match["indent"]
        body = "\n".join(row[len(indent):] if row.startswith(indent) else row for row in match["body"].splitlines())
        blocks.append(Block(page, line, match["lang"].lower(), body,
                            (mark["kind"], mark["what"]) if mark else None))
    return blocks


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


RUNNABLE = [page for page in PAGES if any(b.lang == "python" and b.mark is None for b in page_blocks(page))]


@pytest.mark.parametrize("page", RUNNABLE, ids=[_name(p) for p in RUNNABLE])
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    for block in page_blocks(page):
        if block.lang == "python" and block.mark is None:
            exec(compile(block.body, f"{_name(page)}:{block.line}", "exec"), namespace)  # noqa: S102


def test_every_block_runs_or_says_why() -> None:
    problems = []
    for page in PAGES:
        for block in page_blocks(page):
            where = f"{_name(page)}:{block.line}"
            if block.lang in SHELL and block.mark is None:
                problems.append(f"{where}: a shell block needs <!-- run by: tests/...py::test_... --> or "
                                "<!-- not run: reason --> on the line before it")
            if block.mark and block.mark[0] == "run by":
                path, _, test = block.mark[1].partition("::")
                source = ROOT / path
                if not source.is_file() or not re.search(rf"^def {re.escape(test)}\(", source.read_text(), re.M):
                    problems.append(f"{where}: 'run by: {block.mark[1]}' names no test function")
            if block.mark and block.mark[0] == "not run" and len(block.mark[1]) < 8:
                problems.append(f"{where}: 'not run' needs its reason")
    assert not problems, "\n".join(problems)


def test_the_marks_are_read() -> None:
    """The parser itself: a marked block keeps its reason, an indented fence (in a list) is found, unmarked."""
    text = ("Intro\n\n<!-- not run: needs the COCO dataset -->\n```python\nimport x\n```\n\n- item\n\n"
            "    ```bash\n    make demo\n    ```\n")
    blocks = page_blocks(ROOT / "README.md", text)
    assert [(b.lang, b.body, b.mark, b.line) for b in blocks] == [
        ("python", "import x", ("not run", "needs the COCO dataset"), 4), ("bash", "make demo", None, 10)]
