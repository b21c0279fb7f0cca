"""The README's 30-second tour runs as written, on what the first command installs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"

# As after the first command, which does not install pandas: importing it fails.
WITHOUT_PANDAS = """\
import sys


class NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "pandas":
            raise ImportError("No module named 'pandas'")


sys.meta_path.insert(0, NoPandas())
"""


def python_blocks() -> list[str]:
    """The README's Python code blocks, in order."""
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_python_tour_runs(tmp_path: Path) -> None:
    first, sync, route, bad_input = python_blocks()
    # The routing snippet says it goes inside main() of the first one.
    inside_main = "".join(f"        {line}\n" for line in route.strip().splitlines())
    marker = "        print(result.version, result.labels)\n"
    assert marker in first
    script = WITHOUT_PANDAS + first.replace(marker, marker + inside_main) + sync + bad_input
    path = tmp_path / "tour.py"
    path.write_text(script, encoding="utf-8")

    done = subprocess.run(
        [sys.executable, "-W", "error", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # The last snippet ends in the error it shows, and nothing before it may fail.
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("turnout.core.errors.InvalidInputError: row 0, feature 'mean radius'")
    assert done.stderr.count("Traceback") == 1, done.stderr
    assert (tmp_path / "model.joblib").exists()  # what the admin example deploys
