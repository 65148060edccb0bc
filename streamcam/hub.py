"""Pretrained weights that come from a hub, with the network treated as optional.

torchvision downloads its weights from ``download.pytorch.org`` through ``torch.hub``;
timm from the Hugging Face hub (or, for a few models, a URL through ``torch.hub``).
Offline, both libraries make a user wait: huggingface_hub retries for about a minute,
torch.hub prints its "Downloading" banner first. So, before a library downloads:

1. the local cache is looked at (``torch.hub.get_dir()/checkpoints``, which honours
   ``TORCH_HOME``; the Hugging Face cache, which honours ``HF_HOME``/``HF_HUB_CACHE``):
   a cached file loads without any network attempt;
2. otherwise one TCP connection to the host (or to the proxy the environment names)
   is tried, with a short deadline; a user's ``HF_HUB_OFFLINE=1`` forbids even that;
3. without a network the caller stops at once, naming the file to fetch elsewhere
   and the ``--weights`` option that takes it (:func:`weights_alternative`). With one,
   the library downloads exactly as it always did.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

PROBE_TIMEOUT = 3.0  # seconds for the whole reachability check, name resolution included


@dataclass(frozen=True)
class HubWeights:
    """Where a named model's pretrained weights come from and whether a copy is already local."""

    model: str  # as the user named it: "resnet18", "timm:convnext_tiny"
    url: str  # the file the library would download
    file_name: str  # a name to save it under and pass to --weights
    cached: Path | None  # the local copy the library would use, if there is one
    cache_hint: str = ""  # where to put the file so that the name alone finds it, if that is simple
    offline_switch: str = ""  # the user's setting that forbids the network (e.g. HF_HUB_OFFLINE), if set


def torch_hub_checkpoint(url: str) -> Path:
    """The path ``torch.hub.load_state_dict_from_url`` caches ``url`` under (it honours ``TORCH_HOME``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def torchvision_weights(model: str, weights: WeightsEnum) -> HubWeights:
    """The source of a torchvision weights enum member (it knows its URL)."""
    return _url_weights(model, str(weights.url))


def timm_weights(name: str) -> HubWeights | None:
    """The source timm would load ``name``'s pretrained weights from (its pretrained_cfg says),
    or None when timm has no hub source for it (a local file, or no weights at all)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or cfg.file or cfg.state_dict:
        return None
    by_url = _url_weights(f"timm:{name}", cfg.url) if cfg.url else None
    # timm prefers the hub, unless told to use a copy already in torch.hub's cache
    old_cache = int(os.environ.get("TIMM_USE_OLD_CACHE", 0)) > 0 and by_url is not None and by_url.cached is not None
    if cfg.hf_hub_id and not old_cache:
        return _hf_weights(f"timm:{name}", cfg.hf_hub_id, cfg.hf_hub_filename)
    return by_url


def _url_weights(model: str, url: str) -> HubWeights:
    """A file downloaded through ``torch.hub`` (cached under ``TORCH_HOME``)."""
    local = torch_hub_checkpoint(url)
    return HubWeights(model, url, local.name, local if local.is_file() else None, cache_hint=str(local.parent))


def _hf_weights(model: str, hub_id: str, file_name: str | None) -> HubWeights:
    """timm asks the hub for the safetensors version of a file first, then for the file itself."""
    from huggingface_hub import constants, hf_hub_url, try_to_load_from_cache

    repo_id, _, revision = hub_id.partition("@")
    candidates = _hf_candidates(file_name or "pytorch_model.bin")
    cached = None
    for candidate in candidates:
        found = try_to_load_from_cache(repo_id, candidate, revision=revision or None)
        if isinstance(found, str):
            cached = Path(found)
            break
    url = hf_hub_url(repo_id, candidates[0], revision=revision or None)
    local_name = f"{repo_id.rsplit('/', 1)[-1]}{Path(candidates[0]).suffix}"
    switch = "HF_HUB_OFFLINE" if constants.is_offline_mode() else ""
    return HubWeights(model, url, local_name, cached, offline_switch=switch)


# timm's safetensors alternatives of its pickled file names (timm.models._hub._get_safe_alternatives)
_SAFE_NAMES = {"pytorch_model.bin": "model.safetensors", "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}


def _hf_candidates(file_name: str) -> list[str]:
    """The hub files timm tries for ``file_name``, in its order."""
    if file_name in _SAFE_NAMES:
        return [_SAFE_NAMES[file_name], file_name]
    if file_name.endswith(".bin"):
        return [file_name[: -len(".bin")] + ".safetensors", file_name]
    return [file_name]


def network_problem(source: HubWeights, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why ``source.url`` cannot be downloaded from here (a user's offline switch, or no
    connection to its host within ``timeout`` seconds); None when it can be tried."""
    if source.offline_switch:
        return f"{source.offline_switch} is set"
    return unreachable(source.url, timeout)


def unreachable(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why no TCP connection reaches ``url``'s host (or the proxy the environment names for it)
    within ``timeout`` seconds, name resolution included; None when one does."""
    host, port = _address(url)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(f"{host}:{port} unreachable: {error.strerror or error}")

    # getaddrinfo has no timeout of its own: the thread bounds it (and is left to finish alone).
    probe = threading.Thread(target=connect, name="streamcam-network-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    return outcome[0] if outcome else f"{host}:{port} did not answer within {timeout:g} s"


def _address(url: str) -> tuple[str, int]:
    """The host and port a download of ``url`` connects to first: the proxy's, if one applies."""
    parts = urlparse(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    default_port = 443 if parts.scheme == "https" else 80
    return parts.hostname or "", parts.port or default_port


def weights_alternative(source: HubWeights) -> str:
    """The exact ``--weights`` way round a download that cannot happen here."""
    cache = f" (or put it in {source.cache_hint} and keep --model alone)" if source.cache_hint else ""
    return f"download {source.url} elsewhere and pass --weights {source.file_name}{cache}"
