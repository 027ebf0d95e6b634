"""Shared test set-up."""

import os

import pytest
import torch

# Tests compare against CPU references: the CLI's and the app's default device (auto) would pick
# a GPU where there is one. The GPU tests (test_device.py) ask for cuda themselves.
os.environ.setdefault("LIGHTVIZ_DEVICE", "cpu")


@pytest.fixture(autouse=True, scope="session")
def _private_model_store(tmp_path_factory):
    """Fine-tuned models the tests make are stored in a temporary folder, never in ~/.cache
    (servers the browser tests start inherit it)."""
    os.environ["LIGHTVIZ_MODEL_STORE"] = str(tmp_path_factory.mktemp("model-store"))


@pytest.fixture(autouse=True)
def _entrypoint_runs_every_time(monkeypatch):
    """Run app.py on every AppTest run, as the real server does.

    The server stops treating pages/ as a v1 multipage folder once app.py calls
    st.navigation; AppTest (Streamlit 1.67) re-detects the folder on every run and then
    executes the page file alone, without app.py's sidebar.
    """
    from streamlit.runtime import pages_manager

    original = pages_manager.PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        pages_manager.PagesManager.uses_pages_directory = False

    monkeypatch.setattr(pages_manager.PagesManager, "__init__", init)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train faster on one intra-op thread: a second only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
