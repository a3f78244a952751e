"""`ucdir data prepare` end to end against a local HTTP server on 127.0.0.1 (never the internet)."""

import hashlib
import http.server
import threading
import zipfile
from functools import partial

import pytest

from ucdir_core.data import datasets
from ucdir_core.cli import main
from ucdir_core.base.errors import DataError
from ucdir_core.data.folders import load_domains
from conftest import write_folder


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support; records the Range headers it saw."""

    ranges: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path.split("?")[0])
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        header = self.headers.get("Range")
        type(self).ranges.append(header)
        if header:
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    RangeHandler.ranges = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def make_pacs_zip(tmp_path, served):
    src = write_folder(tmp_path / "src" / "kfold", {d: {"dog": 2, "horse": 3} for d in
                                                    ("art_painting", "cartoon", "photo", "sketch")})
    archive = served / "PACS.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(src.rglob("*.png")):
            zf.write(p, p.relative_to(src.parent))
    return archive


def test_prepare_pacs_from_local_mirror_via_cli(tmp_path, server, capsys):
    served, url = server
    make_pacs_zip(tmp_path, served)
    root = tmp_path / "pacs"
    assert main(["data", "prepare", "pacs", "--root", str(root), "--mirror", url]) == 0
    pair = load_domains(root, ["photo", "sketch"])
    assert len(pair.a) == 5 and pair.a.classes == ["dog", "horse"]
    assert "no sha256 is pinned" in capsys.readouterr().out


def test_prepare_resumes_a_partial_download_and_checks_sha256(tmp_path, server):
    served, url = server
    archive = make_pacs_zip(tmp_path, served)
    data = archive.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    bench = datasets.Benchmark("pacs", ("photo", "sketch"), ("dog", "horse"),
                               (datasets.Archive("PACS.zip", f"{url}/PACS.zip", digest),))
    root = tmp_path / "out"
    cache = root / ".archives"
    cache.mkdir(parents=True)
    (cache / "PACS.zip.part").write_bytes(data[: len(data) // 3])  # an interrupted earlier download
    report = datasets.prepare(bench, root, progress=False)
    assert report["archives"]["PACS.zip"] == {"sha256": digest, "pinned": True}
    assert RangeHandler.ranges == [f"bytes={len(data) // 3}-"]
    assert (cache / "PACS.zip").read_bytes() == data
    assert report["images"] == {"photo": 5, "sketch": 5}


def test_prepare_refuses_a_wrong_hash(tmp_path, server):
    served, url = server
    make_pacs_zip(tmp_path, served)
    bench = datasets.Benchmark("pacs", ("photo",), ("dog",), (datasets.Archive("PACS.zip", f"{url}/PACS.zip", "0" * 64),))
    with pytest.raises(DataError, match="PACS.zip"):
        datasets.prepare(bench, tmp_path / "out", progress=False)


def test_domainnet_subset_and_office_layouts(tmp_path, server):
    served, url = server
    src = write_folder(tmp_path / "dn", {"clipart": {"bird": 2, "zebra": 1, "airplane": 4}})
    with zipfile.ZipFile(served / "clipart.zip", "w") as zf:
        for p in sorted(src.rglob("*.png")):
            zf.write(p, p.relative_to(src))
    bench = datasets.BENCHMARKS["domainnet"]
    only_clipart = datasets.Benchmark("domainnet", ("clipart",), bench.classes, bench.archives[:1])
    datasets.prepare(only_clipart, tmp_path / "root", mirror=url, progress=False, log=lambda s: None)
    assert sorted(p.name for p in (tmp_path / "root" / "clipart").iterdir()) == ["bird", "zebra"]
    # Office-Home's "Real World" folder becomes Real_World
    oh = write_folder(tmp_path / "oh" / "OfficeHomeDataset", {"Real World": {"Mug": 2}, "Art": {"Mug": 1}})
    counts = datasets.lay_out(datasets.BENCHMARKS["office_home"], oh.parent, tmp_path / "ohroot", ("Art", "Real_World"))
    assert counts == {"Art": 1, "Real_World": 2}


def test_known_benchmarks_lists():
    b = datasets.BENCHMARKS
    assert len(b["office_home"].classes) == 65 and b["office_home"].domains == ("Art", "Clipart", "Product", "Real_World")
    assert len(b["office31"].classes) == 31 and b["office31"].domains == ("amazon", "dslr", "webcam")
    assert b["domainnet"].classes == ("bird", "feather", "teapot", "tiger", "whale", "windmill", "zebra")
    assert len(b["domainnet"].domains) == 6 and len(b["pacs"].classes) == 7
    with pytest.raises(DataError):
        datasets.get_benchmark("imagenet")
