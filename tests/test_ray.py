"""streamcam.ray: ``Explain`` on a local Ray cluster (2 CPUs) with the real model on real photos, and ``connect`` /
``actor_resources``. The columns Ray gives back must be what a local Explainer gives for the same frames."""

from __future__ import annotations

import importlib
import importlib.util
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import streamcam
from streamcam.demo import pan_frames
from streamcam.errors import InputError

ray = pytest.importorskip("ray")
import ray.data  # noqa: E402

from streamcam.ray import Explain, actor_resources, connect  # noqa: E402

OPTIONS = dict(device="cpu", backend="torch")  # both sides on the same engine: same numbers
CAT_LABELS = {"Egyptian cat", "tabby", "tiger cat"}


def rgb(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def ragged(frames: list[np.ndarray]) -> np.ndarray:
    """An object array of frames, as Ray Data gives a column of frames of different sizes."""
    column = np.empty(len(frames), dtype=object)
    for index, frame in enumerate(frames):  # one by one: numpy would broadcast same-shaped frames
        column[index] = frame
    return column


def free_port() -> int:
    """A TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- before any cluster: these run first, while this process is connected to none ----------------


def test_importing_streamcam_does_not_import_ray():
    code = ("import sys, streamcam, streamcam.cli, streamcam.engine; streamcam.Explainer; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_without_ray_the_import_says_how_to_install_it(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    monkeypatch.delitem(sys.modules, "streamcam.ray")
    with pytest.raises(InputError) as error:
        importlib.import_module("streamcam.ray")
    assert str(error.value) == "streamcam.ray needs Ray: pip install 'streamcam[ray]'"


def test_connect_refuses_an_address_nobody_answers_at_quickly():
    assert not ray.is_initialized()
    with pytest.raises(InputError, match=r"^cannot connect to a Ray cluster at 127\.0\.0\.1:\d+: ") as error:
        connect(f"127.0.0.1:{free_port()}")
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="auto or HOST:PORT"):
        connect("no-port-here")
    with pytest.raises(RuntimeError, match="connect"):
        actor_resources()
    assert not ray.is_initialized()


def test_connect_auto_without_a_cluster_is_one_line(monkeypatch):
    # Ray's own words, first line only (a real "auto" could find another user's cluster on this machine)
    def no_cluster(**_options):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.\nmore")

    monkeypatch.setattr(ray, "init", no_cluster)
    with pytest.raises(InputError) as error:
        connect("auto")
    assert str(error.value) == ("cannot connect to a Ray cluster at auto: Could not find any running Ray instance. "
                                "Please specify the one to connect to.")


# --- on a local cluster -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> str:
    """A private local cluster of 2 CPUs, started by ``connect(None)`` (ray.init(address="local", ...))."""
    address = connect(None, num_cpus=2, object_store_memory=500 * 2**20, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield address
    ray.shutdown()


def test_connect_starts_a_local_cluster_and_keeps_it(cluster):
    assert ray.cluster_resources()["CPU"] == 2
    assert connect(None) == connect("auto") == connect(cluster) == cluster
    with pytest.raises(InputError, match=f"already connected to the Ray cluster at {cluster}"):
        connect(f"127.0.0.1:{free_port()}")


def test_actors_take_one_cpu_here_and_one_gpu_where_there_are_gpus(cluster, monkeypatch):
    assert "GPU" not in ray.cluster_resources()
    assert actor_resources() == {"num_cpus": 1}
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 2.0})
    assert actor_resources() == {"num_gpus": 1}


def test_ray_data_gives_what_a_local_explainer_gives(cluster, cat, espresso):
    # Frames of three sizes, so that batches mix sizes; RGB in (Ray), BGR to the local Explainer.
    frames = [cat, espresso, cv2.resize(cat, (224, 224)), espresso[50:350, 100:500], cv2.flip(cat, 1)]
    ds = ray.data.from_items([{"image": rgb(frame), "id": i} for i, frame in enumerate(frames)])
    rows = ds.map_batches(Explain, fn_constructor_kwargs=dict(top_k=3, boxes=True, keep_image=False, **OPTIONS),
                          batch_format="numpy", batch_size=2,
                          compute=ray.data.ActorPoolStrategy(size=2), **actor_resources()).take_all()
    rows.sort(key=lambda row: row["id"])
    assert [row["id"] for row in rows] == list(range(len(frames)))
    assert all("image" not in row for row in rows)

    cat_rows, espresso_rows = [rows[i] for i in (0, 2, 4)], [rows[i] for i in (1, 3)]
    assert all(row["label"][0] in CAT_LABELS for row in cat_rows)
    assert all(row["label"][0] == "espresso" for row in espresso_rows)

    with streamcam.Explainer(top_k=3, **OPTIONS) as ex:  # one frame at a time: no batching effects
        local = [ex.explain([frame]).to_host() for frame in frames]
    for row, host, frame in zip(rows, local, frames):
        np.testing.assert_array_equal(row["class_id"], host.class_ids[0])
        assert list(row["label"]) == host.labels[0]
        np.testing.assert_allclose(row["score"], host.scores[0], atol=1e-4)
        assert row["map"].shape == host.maps.shape[-2:] == (7, 7)
        np.testing.assert_allclose(row["map"], host.maps[0, 0], atol=1e-4)
        box = host.boxes[0, 0]
        assert box[2] > box[0] and box[3] > box[1], "the photos' objects are boxed"
        np.testing.assert_array_equal(row["box"], box)
        assert 0 <= box[0] < box[2] <= frame.shape[1] and 0 <= box[1] < box[3] <= frame.shape[0]


def test_a_clip_from_numpy_through_one_actor_in_order(cluster, cat):
    # a generated clip of a real photo, as one N x H x W x 3 array: the from_numpy path, batches of one size
    frames = [frame for frame, _ in pan_frames(cat, (320, 240), 12)]
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    try:
        ds = ray.data.from_numpy(np.stack([rgb(frame) for frame in frames])).rename_columns({"data": "image"})
        out = ds.map_batches(Explain, fn_constructor_kwargs=dict(boxes=True, **OPTIONS), batch_format="numpy",
                             batch_size=4, compute=ray.data.ActorPoolStrategy(size=1)).take_batch(len(frames))
    finally:
        context.execution_options.preserve_order = False
    with streamcam.Explainer(**OPTIONS) as ex:
        host = ex.explain(frames).to_host()  # one batch of 12 here, three of 4 there
    np.testing.assert_array_equal(out["image"], np.stack([rgb(frame) for frame in frames]))
    np.testing.assert_array_equal(out["class_id"], host.class_ids)
    assert set(out["label"][:, 0]) <= CAT_LABELS
    np.testing.assert_allclose(out["score"], host.scores, atol=1e-4)
    np.testing.assert_allclose(out["map"], host.maps[:, 0], atol=1e-4)
    expected = np.where((host.boxes[:, 0, 2:] > host.boxes[:, 0, :2]).all(1, keepdims=True), host.boxes[:, 0], -1)
    np.testing.assert_array_equal(out["box"], expected)
    assert (out["box"][:, 0] >= 0).sum() >= len(frames) // 2, "most frames have a box"


@pytest.fixture(scope="module")
def explain() -> Explain:
    """One Explain in this process (no Ray needed to call it)."""
    return Explain(top_k=2, map_size=(14, 21), **OPTIONS)


def test_columns_types_shapes_and_map_size(explain, photos, default_explainer):
    images = np.stack([rgb(cv2.resize(photo, (320, 240))) for photo in photos])  # one N x H x W x 3 array
    batch = {"image": images, "name": np.array(["cat", "espresso"])}
    out = explain(batch)
    assert out["image"] is images and list(out["name"]) == ["cat", "espresso"]  # passed through
    assert out["class_id"].dtype == np.int64 and out["class_id"].shape == (2, 2)
    assert out["score"].dtype == np.float32 and out["score"].shape == (2, 2)
    assert out["label"].shape == (2, 2) and out["label"][1, 0] == "espresso"
    assert out["map"].dtype == np.float32 and out["map"].shape == (2, 14, 21)
    assert out["map"].min() >= 0 and out["map"].max() <= 1
    assert (out["box"] == -1).all() and out["box"].dtype == np.int32  # boxes off
    # map_size is the 7x7 map resized, bilinear: the local Explainer's map, upsampled
    host = default_explainer.explain(list(images[..., ::-1])).to_host()
    upsampled = F.interpolate(torch.from_numpy(host.maps[:, :1]), size=(14, 21), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out["map"], upsampled[:, 0].numpy(), atol=1e-4)


def test_channel_order_matters_and_rgb_is_expected(explain, espresso):
    right = explain({"image": rgb(espresso)[None]})
    wrong = explain({"image": espresso[None]})  # BGR fed as if RGB: a blue espresso
    assert right["label"][0, 0] == "espresso"
    assert not np.allclose(right["score"], wrong["score"], atol=1e-3)


def test_an_empty_batch_gives_empty_columns(explain):
    out = explain({"image": np.zeros((0, 240, 320, 3), np.uint8)})
    assert out["class_id"].shape == (0, 2) and out["map"].shape == (0, 14, 21) and out["box"].shape == (0, 4)


@pytest.mark.parametrize("options, message", [
    (dict(top_k=0), "top-k must be at least 1, not 0"),
    (dict(method="nope"), "nope"),
    (dict(map_size=0), "map_size must be a positive int or (height, width), not 0"),
    (dict(map_size=(7, 7, 7)), "map_size must be a positive int"),
    (dict(map_size=True), "map_size must be a positive int"),
])
def test_bad_options_are_one_input_error(options, message):
    with pytest.raises(InputError) as error:
        Explain(**OPTIONS, **options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'topk'"):
        Explain(topk=3, **OPTIONS)


def test_bad_batches_are_one_input_error(explain, cat):
    with pytest.raises(InputError, match=r"needs a column 'image'.*\['frame'\]"):
        explain({"frame": rgb(cat)[None]})
    with pytest.raises(InputError, match="image 1 must be H x W x 3 uint8 RGB, not float32 of shape"):
        explain({"image": ragged([rgb(cat), rgb(cat).astype(np.float32)])})
    with pytest.raises(InputError, match=r"image 0 must be H x W x 3 uint8 RGB, not uint8 of shape \(300, 451\)"):
        explain({"image": cv2.cvtColor(cat, cv2.COLOR_BGR2GRAY)[None]})


def test_a_bad_option_on_the_cluster_names_the_error(cluster, cat):
    ds = ray.data.from_items([{"image": rgb(cat)}])
    with pytest.raises(Exception) as error:
        ds.map_batches(Explain, fn_constructor_kwargs=dict(method="nope", **OPTIONS), batch_format="numpy",
                       compute=ray.data.ActorPoolStrategy(size=1)).take_all()
    assert "streamcam.errors.InputError" in str(error.value)
