"""mypy --strict over the one import root ``ics_sms``, exactly as the wheel lays it out.

The repository keeps the card's folders at the top level (``schemas/``, ``producers/``...)
and ``pyproject.toml`` maps each onto a subpackage of ``ics_sms``. mypy names modules after
folders, so this script lays out that mapping as a tree of symbolic links under
``build/typecheck/`` and runs mypy there with the project's configuration. It fails unless
mypy checked every ``.py`` file of the packages (the count is printed).

Usage: ``python .ci/typecheck.py [extra mypy arguments]``
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in config["package-dir"].items()}


def lay_out(mapping: dict[str, Path]) -> int:
    """Symlink each mapped folder to its place in the import tree; count the .py files."""
    shutil.rmtree(TREE, ignore_errors=True)
    files = 0
    for name, folder in sorted(mapping.items()):
        target = TREE.joinpath(*name.split("."))
        target.mkdir(parents=True, exist_ok=True)
        nested = {n.rsplit(".", 1)[1] for n in mapping if n.startswith(name + ".")}
        for entry in folder.iterdir():
            if entry.name in nested or entry.name == "__pycache__":
                continue
            os.symlink(entry, target / entry.name)
        files += sum(
            1 for path in folder.rglob("*.py")
            if not ({p.name for p in path.relative_to(folder).parents} & nested
                    or "__pycache__" in path.parts)
        )
    return files


def main() -> int:
    expected = lay_out(package_dirs())
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
               "-p", "ics_sms", *sys.argv[1:]]
    run = subprocess.run(command, cwd=TREE, capture_output=True, text=True)
    sys.stdout.write(run.stdout)
    sys.stderr.write(run.stderr)
    found = re.search(r"in (\d+) source files?", run.stdout)
    checked = int(found.group(1)) if found else -1
    print(f"typecheck: mypy checked {checked} files; the packages have {expected}")
    if run.returncode == 0 and checked != expected:
        print("typecheck: FAILED: mypy did not check every package file", file=sys.stderr)
        return 1
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
