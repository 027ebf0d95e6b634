"""Pretrained weights on request: served by a local HTTP server here, never the internet.

A good file downloads with progress and lands in the torch cache; a corrupt one (checksum
not matching its name) and a truncated one are refused and not cached; with no server one
line says so. The sidebar offers the download for a random-weight torchvision model and
switches to the pretrained model once it is in."""

import hashlib
import http.server
import io
import threading
from dataclasses import replace

import pytest
import torch
from streamlit.testing.v1 import AppTest

from lightviz.io import pretrained, zoo

ARCH = "squeezenet1_1"  # 1.2 M weights: the smallest torchvision classifier


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    lie_about_length = False

    def do_GET(self):  # noqa: N802 - http.server's name
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + (1000 if self.lie_about_length else 0)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Files
    server.shutdown()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return tmp_path / "torch" / "hub" / "checkpoints"


def _weights_file() -> bytes:
    buffer = io.BytesIO()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        torch.save(zoo.build_architecture(ARCH).state_dict(), buffer)
    return buffer.getvalue()


def _serve(served, body: bytes, name: str = "weights") -> pretrained.WeightsInfo:
    url, handler = served
    prefix = hashlib.sha256(body).hexdigest()[:8]
    file_name = f"{name}-{prefix}.pth"
    handler.files[f"/{file_name}"] = body
    return pretrained.WeightsInfo(arch=ARCH, url=f"{url}/{file_name}", file_name=file_name, size_bytes=len(body),
                                  sha256_prefix=prefix, label="TEST_V1")


def test_download_checks_the_file_and_caches_it(served, torch_home):
    body = b"weights" * 100_000
    seen = []
    path = pretrained.download(_serve(served, body), lambda done, total: seen.append((done, total)))
    assert path.parent == torch_home and path.read_bytes() == body
    assert seen[-1] == (len(body), len(body)) and len(seen) >= 1
    assert list(torch_home.iterdir()) == [path]  # no partial file left behind


def test_corrupt_truncated_and_offline_downloads_are_refused_and_not_cached(served, torch_home):
    good = _serve(served, b"good bytes" * 1000, name="corrupt")
    served[1].files[f"/{good.file_name}"] = b"evil bytes" * 1000  # same name, other content
    with pytest.raises(pretrained.DownloadError, match="failed its checksum.*not saved"):
        pretrained.download(good)
    served[1].lie_about_length = True
    try:
        with pytest.raises(pretrained.DownloadError):
            pretrained.download(_serve(served, b"short" * 1000, name="short"))
    finally:
        served[1].lie_about_length = False
    closed = replace(good, url="http://127.0.0.1:9/none.pth")  # discard port: nothing listens
    with pytest.raises(pretrained.DownloadError, match="could not reach 127.0.0.1:9") as error:
        pretrained.download(closed, timeout_s=5)
    assert "\n" not in str(error.value) and "offline" in str(error.value)
    assert not torch_home.exists() or list(torch_home.iterdir()) == []


def test_sidebar_downloads_on_request_and_switches_to_the_pretrained_model(served, torch_home, monkeypatch):
    body = _weights_file()
    info = _serve(served, body, name=ARCH)
    monkeypatch.setattr(pretrained, "info", lambda arch: info if arch == ARCH else None)
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.query_params["model"], at.query_params["n"] = ARCH, "2"
    at.run()
    assert not at.exception
    assert not torch_home.exists()  # nothing downloads unless asked
    assert any(info.file_name in caption.value for caption in at.sidebar.caption)  # name, size and source first
    button = next(b for b in at.sidebar.button if b.label.startswith("Download pretrained weights"))
    button.click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert (torch_home / info.file_name).read_bytes() == body
    assert at.session_state["model_name"] == pretrained.pretrained_name(ARCH)
    loaded = pretrained.load_pretrained(pretrained.pretrained_name(ARCH)).model.state_dict()
    reference = torch.load(io.BytesIO(body), weights_only=True)
    assert all(torch.equal(loaded[key], reference[key]) for key in reference)
    assert "pretrained" in at.sidebar.selectbox(key="model_picker").format_func(at.session_state["model_name"])
