"""Offline is normal: hub weights fail at once with the --weights way round; cached weights load with no network.

No test here reaches the network: every socket name lookup and connection leaving the
machine is refused (and counted) by the ``network`` fixture, and the caches are temp folders.
"""

from __future__ import annotations

import errno
import socket
import threading
from pathlib import Path

import cv2
import pytest
import timm
import torch
import torchvision
from huggingface_hub import constants as hf_constants
from safetensors.torch import save_file

import streamcam
from streamcam import hub

from conftest import assert_one_line_error, run_cli

RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
LIBRARY_CHATTER = ("Retrying", "Downloading", "thrown while requesting")


class Network:
    """No internet, the way this machine has none: name lookups fail (``no-dns``), or names resolve
    but connections do not get out (``unreachable``). Loopback works. Every attempt is counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
        self.mode = mode
        self.lookups: list[str] = []
        self.connects: list[tuple] = []
        self._getaddrinfo = socket.getaddrinfo
        self._connect = socket.socket.connect
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)
        monkeypatch.setattr(socket.socket, "connect", lambda sock, address: self.connect(sock, address))

    @property
    def attempts(self) -> int:
        return len(self.lookups) + len(self.connects)

    def getaddrinfo(self, host, port, *args, **kwargs):
        if host in LOOPBACK:
            return self._getaddrinfo(host, port, *args, **kwargs)
        self.lookups.append(host)
        if self.mode == "no-dns":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("192.0.2.1", port))]  # TEST-NET-1

    def connect(self, sock, address):
        self.connects.append(address)
        if address[0] in LOOPBACK:
            return self._connect(sock, address)
        if self.mode == "online":  # the probe's connection "succeeds"; nothing is sent
            return None
        raise OSError(errno.ENETUNREACH, "Network is unreachable")


@pytest.fixture(autouse=True)
def empty_caches(monkeypatch, tmp_path, headless):
    """Fresh torch hub and Hugging Face caches, no proxies, no offline switch, no display: the machine as a new
    user has it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(params=["no-dns", "unreachable"])
def network(request, monkeypatch) -> Network:
    return Network(monkeypatch, request.param)


@pytest.fixture
def photo_file(tmp_path, cat) -> Path:
    path = tmp_path / "cat.jpg"
    cv2.imwrite(str(path), cat)
    return path


def assert_quiet(*streams: str) -> None:
    for text in streams:
        for chatter in LIBRARY_CHATTER:
            assert chatter not in text, text


# --- no network, no cached copy: one line, at once -----------------------------


def test_torchvision_weights_offline_name_the_file_and_the_option(capsys, tmp_path, photo_file, network):
    out = tmp_path / "out.jpg"
    code, err, stdout = run_cli(capsys, str(photo_file), "-o", str(out), "--model", "resnet18", "--no-display",
                                stdout=True)
    assert_one_line_error(code, err, f"download {RESNET18_URL} elsewhere", "--weights resnet18-f37072fd.pth",
                          "download.pytorch.org:443 unreachable")
    assert_quiet(err, stdout)
    assert network.attempts <= 2  # one lookup (and one connection when names resolve): no retries
    assert not out.exists()


def test_timm_weights_offline_name_the_hub_file_and_the_option(capsys, tmp_path, photo_file, network):
    code, err, stdout = run_cli(capsys, str(photo_file), "-o", str(tmp_path / "out.jpg"),
                                "--model", "timm:convnext_tiny", "--no-display", stdout=True)
    url = "https://huggingface.co/timm/convnext_tiny.in12k_ft_in1k/resolve/main/model.safetensors"
    assert_one_line_error(code, err, f"download {url} elsewhere", "--weights convnext_tiny.in12k_ft_in1k.safetensors",
                          "huggingface.co:443 unreachable")
    assert_quiet(err, stdout)
    assert network.attempts <= 2
    assert network.lookups == ["huggingface.co"]


def test_hf_endpoint_is_the_host_probed(monkeypatch, capsys):
    """HF_ENDPOINT (a mirror) is where timm would download from, so it is what is probed: here a local
    port that refuses connections, a real socket refusal without leaving the machine."""
    network = Network(monkeypatch, "no-dns")
    with socket.socket() as closed:  # bound, never listening: connecting is refused
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
        monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        with pytest.raises(streamcam.InputError) as error:
            streamcam.load_model("timm:resnet18")
    message = str(error.value)
    assert f"{endpoint}/timm/resnet18.a1_in1k/resolve/main/model.safetensors" in message
    assert f"{endpoint[len('http://'):]} unreachable" in message and "\n" not in message
    assert network.lookups == [] and len(network.connects) == 1
    assert_quiet(*capsys.readouterr())


def test_users_hf_hub_offline_is_respected(monkeypatch, network):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(streamcam.InputError, match="HF_HUB_OFFLINE is set.*--weights convnext_tiny"):
        streamcam.load_model("timm:convnext_tiny")
    assert network.attempts == 0


def test_the_probe_has_a_deadline_even_when_name_lookup_hangs(monkeypatch):
    """A resolver that never answers (getaddrinfo has no timeout of its own) still gives an answer."""
    release = threading.Event()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: release.wait(30) and [])
    try:
        assert hub.unreachable("https://download.pytorch.org/models/x.pth", timeout=0.2) == (
            "download.pytorch.org:443 did not answer within 0.2 s")
    finally:
        release.set()


def test_the_probe_goes_to_the_proxy_when_one_is_set(monkeypatch):
    network = Network(monkeypatch, "unreachable")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub.unreachable(RESNET18_URL).startswith("proxy.example:3128 unreachable")
    monkeypatch.setenv("NO_PROXY", "download.pytorch.org")
    assert hub.unreachable(RESNET18_URL).startswith("download.pytorch.org:443 unreachable")
    assert network.lookups == ["proxy.example", "download.pytorch.org"]


# --- a cached copy: loads offline, no network attempt -----------------------------


def test_cached_torchvision_weights_load_offline(tmp_path, capsys, network):
    """torchvision checks a file's hash only when it downloads it (check_hash=True applies to the download):
    a file under the expected name in TORCH_HOME's cache is loaded as is."""
    torch.manual_seed(3)
    saved = torchvision.models.resnet18(weights=None).state_dict()
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(saved, checkpoints / Path(RESNET18_URL).name)
    loaded = streamcam.load_model("resnet18")
    assert torch.equal(loaded.module.state_dict()["fc.weight"], saved["fc.weight"])
    assert network.attempts == 0
    assert_quiet(*capsys.readouterr())


def hf_cache_file(cache: Path, repo_id: str, file_name: str) -> Path:
    """Where huggingface_hub keeps ``file_name`` of ``repo_id`` at ``main`` (its cache layout)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot / file_name


def test_cached_hf_weights_load_offline(tmp_path, capsys, network):
    torch.manual_seed(4)
    saved = timm.create_model("resnet18", pretrained=False).state_dict()
    save_file(saved, hf_cache_file(tmp_path / "hf", "timm/resnet18.a1_in1k", "model.safetensors"))
    loaded = streamcam.load_model("timm:resnet18")
    assert torch.equal(loaded.module.state_dict()["fc.weight"], saved["fc.weight"])
    assert loaded.input_size == 224
    assert network.attempts == 0
    assert_quiet(*capsys.readouterr())


# --- online: the library downloads, as before -----------------------------------


def test_online_torchvision_downloads_through_torch_hub(tmp_path, monkeypatch, capsys):
    network = Network(monkeypatch, "online")
    torch.manual_seed(5)
    served = tmp_path / "served.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), served)
    fetched = []

    def download(url, dst, hash_prefix=None, progress=True):  # torch.hub's downloader, minus the network
        fetched.append(url)
        Path(dst).write_bytes(served.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    loaded = streamcam.load_model("resnet18")
    assert fetched == [RESNET18_URL]
    assert (tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth").is_file()
    assert torch.equal(loaded.module.state_dict()["fc.weight"], torch.load(served)["fc.weight"])
    assert network.lookups == ["download.pytorch.org"]  # the probe, and nothing else left the machine
    out, err = capsys.readouterr()
    assert "Downloading" in err and out == ""  # torch.hub's own banner, kept off stdout (it may carry --json -)
