"""The package's structure drawn from its imports alone: one arrow per pair of folders that import each other.

    python scripts/import_graph.py            # Mermaid flowchart (GitHub and MkDocs render it)
    python scripts/import_graph.py --check    # exit 1 if an import runs against the floors below

Every import inside the package is relative (``from ..heads.anchors import ssd_anchors``), so the folder it names
is read from the file's place in the tree; nothing is imported or executed. The floors, lowest first: ``backbone``,
``heads``, ``models`` with ``datasets`` beside it, ``deploy`` (on ``models``) with ``pictures`` beside it, ``tasks``,
``commands``. An arrow may only point to a lower floor.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# folder -> floor; an import may only point at a lower floor (datasets sits beside models)
FLOORS = {"backbone": 0, "heads": 1, "models": 2, "datasets": 2, "deploy": 3, "pictures": 3, "tasks": 4, "commands": 5}


def folder_imports(root: Path = ROOT) -> Counter[tuple[str, str]]:
    """``{(importing folder, imported folder): number of import statements}`` over the package's folders."""
    edges: Counter[tuple[str, str]] = Counter()
    for folder in FLOORS:
        for file in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                if not (isinstance(node, ast.ImportFrom) and node.level):
                    continue
                base = file.parent
                for _ in range(node.level - 1):
                    base = base.parent
                target = base.joinpath(*(node.module or "").split(".")).relative_to(root).parts
                if target and target[0] != folder:
                    edges[folder, target[0]] += 1
    return edges


def upward(edges: Counter[tuple[str, str]]) -> list[tuple[str, str]]:
    """The arrows that point at the same or a higher floor."""
    return sorted(pair for pair in edges if FLOORS.get(pair[1], 99) >= FLOORS[pair[0]])


def mermaid(edges: Counter[tuple[str, str]]) -> str:
    lines = ["flowchart BT"]
    lines += [f"    {a} -->|{n}| {b}" for (a, b), n in sorted(edges.items(), key=lambda e: (FLOORS[e[0][0]], e[0]))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail on an arrow that runs up the floors")
    args = parser.parse_args(argv)
    edges = folder_imports()
    print(mermaid(edges))
    wrong = upward(edges)
    if args.check and wrong:
        print("imports against the floors: " + ", ".join(f"{a} -> {b}" for a, b in wrong), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
