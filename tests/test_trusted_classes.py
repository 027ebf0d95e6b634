"""Trusted pickled modules: even with "trust code" ticked, the classes a file names are looked
up in modules already imported, never imported on the file's say-so. Files naming a class in
`lightviz.__main__` (importing it runs the CLI) and in `lightviz.ui.sidebar` (Streamlit UI code)
are built here and loaded in a fresh child process, which must refuse them in one line without
importing either module (or Streamlit)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from hostile import ROOT
from torch import nn

from lightviz.cli import main

NAMES = ("lightviz.__main__", "lightviz.ui.sidebar")


def _module_pickle(module_name: str, path: Path) -> Path:
    """torch.save of a whole module whose class claims to live in `module_name`."""

    class X(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    X.__module__, X.__qualname__ = module_name, "X"
    fake = types.ModuleType(module_name)
    fake.X = X
    saved = sys.modules.get(module_name)
    sys.modules[module_name] = fake  # pickle looks the class up there by name
    try:
        torch.save(X(), path)
    finally:
        if saved is None:
            del sys.modules[module_name]
        else:
            sys.modules[module_name] = saved
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("trusted")
    return {name: _module_pickle(name, folder / f"{name.replace('.', '_')}.pt") for name in NAMES}


_CHILD = """
import json, sys
from lightviz.io.loading import load_user_model
errors = []
for path in sys.argv[1:]:
    try:
        load_user_model(path, trust_code=True)
        errors.append(None)
    except ValueError as error:
        errors.append(str(error))
print(json.dumps({"errors": errors, "imported": sorted(m for m in sys.modules
                  if m in ("lightviz.__main__", "lightviz.ui", "lightviz.ui.sidebar", "streamlit"))}))
"""


def test_trusted_pickle_never_imports_the_modules_it_names(files):
    proc = subprocess.run([sys.executable, "-c", _CHILD, *map(str, files.values())], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[-1])  # the CLI's main() never ran: it would have printed usage
    assert result["imported"] == []
    for name, error in zip(files, result["errors"]):
        assert error is not None and f"{name}.X" in error and "lightviz will not construct" in error


@pytest.mark.parametrize("name", NAMES)
def test_cli_trusted_pickle_naming_an_unimported_module_exit_2_one_line(files, capsys, name):
    assert main(["evaluate", "--model", str(files[name]), "--trust-code", "--input-shape", "4", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and f"{name}.X" in captured.err
