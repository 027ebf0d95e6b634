"""The README's library example runs as written (doctest), with `lv.*` names only."""

import doctest
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs():
    result = doctest.testfile(str(README), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0


def test_readme_example_uses_only_the_public_face():
    code = "\n".join(line for line in README.read_text().splitlines() if line.startswith((">>>", "...")))
    assert "from lightviz" not in code and not re.search(r"import lightviz\.", code)
    assert "import torch, lightviz as lv" in code
