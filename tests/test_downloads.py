"""Downloads that stall or leave damaged files stop with a message that says what and what to do. Local fakes only:
no test here touches the network."""

import hashlib
import socket
import time
import urllib.error

import pytest
import torch
import torchvision

from ftcourse import data, downloads, models


@pytest.fixture
def stalled_url():
    """The URL of a local server that takes connections and never answers.

    Nobody calls accept(): the operating system completes the connection for a listening socket on its own (up to the
    backlog), so a client connects, sends its request, and waits for a reply that never comes.
    """
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/files/weights.pth"


@pytest.fixture
def one_second(monkeypatch):
    monkeypatch.setattr(downloads, "TIMEOUT", 1.0)


def test_a_stalled_download_stops_within_the_time_limit_and_says_what_stalled(stalled_url, tmp_path):
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"The download of the test weights stalled: no data arrived within the "
                                           r"time limit of 1 s\. Try again .*or copy it by hand\."):
        with downloads.time_limit("the test weights", seconds=1, fix="copy it by hand"):
            torch.hub.download_url_to_file(stalled_url, str(tmp_path / "weights.pth"), progress=False)
    assert time.monotonic() - start < 10
    assert list(tmp_path.iterdir()) == []  # torch.hub removed its partial file


def test_the_time_limit_is_restored_however_the_block_ends():
    before = socket.getdefaulttimeout()
    with downloads.time_limit("nothing", seconds=3):
        assert socket.getdefaulttimeout() == 3
    with pytest.raises(KeyError):  # other errors pass through unchanged
        with downloads.time_limit("nothing", seconds=3):
            raise KeyError("not a download problem")
    assert socket.getdefaulttimeout() == before


def test_a_connect_timeout_wrapped_by_urllib_counts_as_a_stall_and_other_network_errors_do_not():
    assert downloads.is_timeout(TimeoutError()) and downloads.is_timeout(urllib.error.URLError(TimeoutError()))
    assert not downloads.is_timeout(urllib.error.URLError("Name or service not known"))
    with pytest.raises(urllib.error.URLError):
        with downloads.time_limit("nothing"):
            raise urllib.error.URLError("Name or service not known")


def test_stalled_imagenet_weights_stop_and_point_to_the_course_checkpoint(stalled_url, one_second, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    download = torch.hub.download_url_to_file
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, *args, **kwargs:
                        download(stalled_url, dst, *args, **kwargs))  # the real download, from the stalled server
    with pytest.raises(RuntimeError, match=r"ResNet-18 weights from https://\S+ stalled: .*pretrained\('lab'\)"):
        models.pretrained("resnet18-imagenet")


def test_damaged_cached_imagenet_weights_are_named_for_deletion(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a download")
    with pytest.raises(RuntimeError, match="The cached weights .* are damaged") as error:
        models.pretrained("resnet18-imagenet")
    assert f"{cached} are damaged" in str(error.value) and "Delete that file" in str(error.value)


def test_a_stalled_dataset_download_stops_and_names_the_dataset_and_the_offline_alternatives(
        stalled_url, one_second, tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", stalled_url)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"download of torchvision's CIFAR10 into .* stalled: .*data\.digits\(\)"):
        data.torchvision_dataset("CIFAR10", tmp_path)
    assert time.monotonic() - start < 10


def test_a_damaged_dataset_download_names_the_folder_to_delete(tmp_path, monkeypatch):
    archive = tmp_path / torchvision.datasets.CIFAR10.filename
    archive.write_bytes(b"not a tar.gz archive")  # an archive that passes the checksum but cannot be unpacked
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    with pytest.raises(RuntimeError, match="Its files are damaged") as error:
        data.torchvision_dataset("CIFAR10", tmp_path)
    assert f"delete {tmp_path / 'cifar-10-batches-py'}" in str(error.value)


def test_a_dataset_that_is_not_there_offline_says_how_to_get_it(tmp_path):
    with pytest.raises(RuntimeError, match=r"not in .*pass download=True .*copy its files .*data\.digits\(\)"):
        data.torchvision_dataset("CIFAR10", tmp_path, download=False)
