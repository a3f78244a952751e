"""Known benchmarks (domains, classes, public archives) and ``prepare``: download, verify, lay out.

Downloads go through pooch (hash check, caching, extraction) with a resumable HTTP downloader:
an interrupted download leaves ``<file>.part`` and the next call continues it with an HTTP Range
request. Archives are data, not instructions: a member with an absolute path, a ``..`` component,
a link or a special file is refused; tar archives are extracted with the standard library's
``data`` filter. A cached archive that fails its hash or does not extract is fetched again. After
extraction every benchmark is laid out as ``ROOT/<domain>/<class>/<image>``, never following a
symbolic link; domain and class folders inside an archive are found by name in Unicode
normalisation form NFC (an archive made where names are stored decomposed is found the same).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ucdir_core.base.errors import DataError
from ucdir_core.base.text import nfc
from ucdir_core.data.digits import build_digits

OFFICE_HOME_CLASSES = (
    "Alarm_Clock", "Backpack", "Batteries", "Bed", "Bike", "Bottle", "Bucket", "Calculator", "Calendar", "Candles",
    "Chair", "Clipboards", "Computer", "Couch", "Curtains", "Desk_Lamp", "Drill", "Eraser", "Exit_Sign", "Fan",
    "File_Cabinet", "Flipflops", "Flowers", "Folder", "Fork", "Glasses", "Hammer", "Helmet", "Kettle", "Keyboard",
    "Knives", "Lamp_Shade", "Laptop", "Marker", "Monitor", "Mop", "Mouse", "Mug", "Notebook", "Oven", "Pan",
    "Paper_Clip", "Pen", "Pencil", "Postit_Notes", "Printer", "Push_Pin", "Radio", "Refrigerator", "Ruler",
    "Scissors", "Screwdriver", "Shelf", "Sink", "Sneakers", "Soda", "Speaker", "Spoon", "TV", "Table", "Telephone",
    "ToothBrush", "Toys", "Trash_Can", "Webcam",
)
OFFICE31_CLASSES = (
    "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator", "desk_chair", "desk_lamp",
    "desktop_computer", "file_cabinet", "headphones", "keyboard", "laptop_computer", "letter_tray", "mobile_phone",
    "monitor", "mouse", "mug", "paper_notebook", "pen", "phone", "printer", "projector", "punchers", "ring_binder",
    "ruler", "scissors", "speaker", "stapler", "tape_dispenser", "trash_can",
)
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
DOMAINNET_SUBSET = ("bird", "feather", "teapot", "tiger", "whale", "windmill", "zebra")
DIGITS_CLASSES = tuple(str(d) for d in range(10))


def _gdrive(file_id: str) -> str:
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


@dataclass(frozen=True)
class Archive:
    """One file to fetch. ``sha256=None``: no published hash is pinned; the computed one is reported."""

    filename: str
    url: str
    sha256: str | None = None


@dataclass(frozen=True)
class Benchmark:
    """A cross-domain benchmark: its domains, its classes and where it comes from.

    ``aliases`` maps a domain to the folder names it may have inside the archives.
    """

    name: str
    domains: tuple[str, ...]
    classes: tuple[str, ...]
    archives: tuple[Archive, ...] = ()
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    homepage: str = ""
    citation: str = ""


_DN = "http://csr.bu.edu/ftp/visda/2019/multi-source"
BENCHMARKS: dict[str, Benchmark] = {
    "office_home": Benchmark(
        "office_home", ("Art", "Clipart", "Product", "Real_World"), OFFICE_HOME_CLASSES,
        (Archive("office_home.zip", _gdrive("1uY0pj7oFsjMxRwaD3Sxy0jgel0fsYXLC")),),
        aliases={"Real_World": ("Real_World", "Real World")},
        homepage="https://www.hemanthdv.org/officeHomeDataset.html",
        citation="Venkateswara et al., Deep Hashing Network for Unsupervised Domain Adaptation, CVPR 2017",
    ),
    "domainnet": Benchmark(
        "domainnet", ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"), DOMAINNET_SUBSET,
        tuple(Archive(f"{d}.zip", f"{_DN}/{'groundtruth/' if d in ('clipart', 'painting') else ''}{d}.zip")
              for d in ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")),
        homepage="http://ai.bu.edu/M3SDA/",
        citation="Peng et al., Moment Matching for Multi-Source Domain Adaptation, ICCV 2019",
    ),
    "pacs": Benchmark(
        "pacs", ("art_painting", "cartoon", "photo", "sketch"), PACS_CLASSES,
        (Archive("PACS.zip", _gdrive("1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd")),),
        homepage="https://domaingeneralization.github.io/",
        citation="Li, Yang, Song, Hospedales, Deeper, Broader and Artier Domain Generalization, ICCV 2017",
    ),
    "office31": Benchmark(
        "office31", ("amazon", "dslr", "webcam"), OFFICE31_CLASSES,
        (Archive("domain_adaptation_images.tar.gz", _gdrive("0B4IapRTv9pJ1WGZVd1VDMmhwdlE")),),
        citation="Saenko et al., Adapting Visual Category Models to New Domains, ECCV 2010",
    ),
    "digits": Benchmark(
        "digits", ("handwritten", "printed"), DIGITS_CLASSES,
        citation="handwritten: UCI optical recognition of handwritten digits (scikit-learn); printed: rendered here",
    ),
}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(BENCHMARKS))}") from None


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class ResumableDownloader:
    """A pooch downloader that continues a partial ``.part`` file with an HTTP Range request and
    shows a tqdm progress bar."""

    def __init__(self, part: Path, progress: bool = True, timeout: float = 60.0, chunk: int = 1 << 16):
        self.part, self.progress, self.timeout, self.chunk = Path(part), progress, timeout, chunk

    def __call__(self, url: str, output_file: str, pooch_obj=None, check_only: bool = False):
        import requests
        from tqdm.auto import tqdm

        if check_only:
            return requests.head(url, allow_redirects=True, timeout=self.timeout).ok
        final = Path(output_file)  # pooch's temporary name; the partial file keeps a stable name
        part = self.part
        part.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout, allow_redirects=True) as resp:
            if resp.status_code == 416:  # already complete
                resp.close()
            else:
                resp.raise_for_status()
                if have and resp.status_code != 206:
                    have = 0  # the server ignored Range: start again
                total = int(resp.headers.get("Content-Length", 0)) + have or None
                with open(part, "ab" if have else "wb") as fh, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, desc=part.name, disable=not self.progress
                ) as bar:
                    for block in resp.iter_content(self.chunk):
                        fh.write(block)
                        bar.update(len(block))
        shutil.move(str(part), str(final))


def fetch(archive: Archive, cache: Path, mirror: str | None = None, progress: bool = True) -> tuple[Path, str]:
    """Download ``archive`` into ``cache`` (resuming), check its sha256; return (path, sha256).

    An unreachable server, an HTTP error or a hash mismatch is a one-line :class:`DataError`.
    """
    import pooch
    import requests

    url = f"{mirror.rstrip('/')}/{archive.filename}" if mirror else archive.url
    known = f"sha256:{archive.sha256}" if archive.sha256 else None
    try:
        path = pooch.retrieve(url, known_hash=known, fname=archive.filename, path=cache,
                              downloader=ResumableDownloader(Path(cache) / (archive.filename + ".part"), progress=progress), progressbar=False)
    except requests.HTTPError as exc:
        raise DataError(f"cannot download {archive.filename} from {url}: HTTP {exc.response.status_code}") from None
    except requests.RequestException as exc:
        raise DataError(f"cannot download {archive.filename} from {url}: {type(exc).__name__} "
                        "(is the server reachable?)") from None
    except ValueError as exc:  # pooch's hash mismatch
        raise DataError(f"{archive.filename}: {str(exc).splitlines()[0]}") from None
    return Path(path), sha256_of(Path(path))


class UnsafeArchive(DataError):
    """An archive with a member that would land outside its folder, or is a link or special file."""


class BrokenArchive(DataError):
    """An archive that cannot be read or extracted (truncated, corrupt, not an archive)."""


def _name_problem(name: str) -> str | None:
    """Why a member name is refused (absolute, or climbing out with ``..``), or None."""
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "a '..' path"
    return None


def _zip_problem(info: zipfile.ZipInfo) -> str | None:
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    return _name_problem(info.filename)


def _tar_problem(member: tarfile.TarInfo) -> str | None:
    if member.issym() or member.islnk():
        return "a link"
    if not (member.isfile() or member.isdir()):
        return "a special file"
    return _name_problem(member.name)


def _extract_zip(path: Path, into: Path) -> None:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if problem := _zip_problem(info):
                raise UnsafeArchive(f"{path.name}: member {info.filename!r} is {problem}; refusing the archive")
        zf.extractall(into)


def _extract_tar(path: Path, into: Path) -> None:
    with tarfile.open(path) as tf:
        members = tf.getmembers()
        for m in members:
            if problem := _tar_problem(m):
                raise UnsafeArchive(f"{path.name}: member {m.name!r} is {problem}; refusing the archive")
        if hasattr(tarfile, "data_filter"):
            try:
                tf.extractall(into, members=members, filter="data")
            except tarfile.FilterError as exc:
                raise UnsafeArchive(f"{path.name}: {exc}; refusing the archive") from None
            return
        for m in members:  # the data filter's effect without it: plain files and folders, no modes or owners
            target = into / m.name
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with tf.extractfile(m) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def extract(path: Path, into: Path) -> Path:
    """Unpack a zip or tar archive into ``into`` (kept if already unpacked; a half-unpacked folder
    left by a kill is started again).

    Raises :class:`UnsafeArchive` for a member with an absolute or ``..`` path, a link or a special
    file (nothing is written), and :class:`BrokenArchive` for an archive that does not extract.
    """
    done = into / ".extracted"
    if done.exists():
        return into
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(path):
            _extract_zip(path, into)
        elif tarfile.is_tarfile(path):
            _extract_tar(path, into)
        else:
            raise BrokenArchive(f"{path.name}: not a zip or tar archive")
    except UnsafeArchive:
        shutil.rmtree(into, ignore_errors=True)
        raise
    except BrokenArchive:
        shutil.rmtree(into, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        shutil.rmtree(into, ignore_errors=True)
        raise BrokenArchive(f"{path.name}: cannot be extracted ({type(exc).__name__}: {exc})") from None
    done.write_text(path.name)
    return into


def _fetch_and_extract(archive: Archive, cache: Path, mirror: str | None, progress: bool,
                       log: Callable[[str], None]) -> tuple[Path, str, Path]:
    """``fetch`` then ``extract``; a cached archive that does not extract is deleted and fetched once more."""
    for attempt in (1, 2):
        path, digest = fetch(archive, cache, mirror, progress)
        try:
            return path, digest, extract(path, cache / (archive.filename + ".d"))
        except BrokenArchive as exc:
            path.unlink(missing_ok=True)
            if attempt == 2:
                raise
            log(f"warning: {exc}; deleted, fetching it again")
    raise AssertionError("unreachable")


def _not_links(folder: str, names: list[str]) -> list[str]:
    """``shutil.copytree`` ignore function: symbolic links are left out, never followed."""
    return [n for n in names if os.path.islink(os.path.join(folder, n))]


def _find_domain_dir(tree: Path, names: tuple[str, ...]) -> Path | None:
    wanted = {nfc(n) for n in names}
    candidates = sorted((p for p in tree.rglob("*") if p.is_dir() and not p.is_symlink() and nfc(p.name) in wanted),
                        key=lambda p: len(p.parts))
    for cand in candidates:
        if (cand / "images").is_dir():
            return cand / "images"
        if any(c.is_dir() for c in cand.iterdir()):
            return cand
    return None


def _class_dir(src: Path, name: str) -> Path | None:
    """The class folder of ``src`` whose name is ``name`` in NFC (None when there is none, or it is a
    symbolic link)."""
    found = src / name
    if not (found.exists() or found.is_symlink()):
        found = next((p for p in sorted(src.iterdir()) if nfc(p.name) == nfc(name)), None)
    return found if found is not None and found.is_dir() and not found.is_symlink() else None


def lay_out(bench: Benchmark, tree: Path, root: Path, domains: tuple[str, ...] | None = None) -> dict[str, int]:
    """Copy each domain's class folders from an extracted ``tree`` to ``root/<domain>/<class>``;
    only the benchmark's classes are kept (DomainNet's 7-class subset); symbolic links are left out,
    never followed. Returns images per domain."""
    counts = {}
    for domain in domains or bench.domains:
        src = _find_domain_dir(tree, bench.aliases.get(domain, (domain,)))
        if src is None:
            raise DataError(f"{bench.name}: domain {domain} not found in the extracted archive {tree}")
        n = 0
        for cls in bench.classes:
            found = _class_dir(src, cls)
            if found is None:
                continue
            dst = root / domain / cls
            if dst.exists():
                shutil.rmtree(dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(found, dst, ignore=_not_links)
            n += sum(1 for p in dst.rglob("*") if p.is_file())
        if n == 0:
            raise DataError(f"{bench.name}: none of its classes found under {src}")
        counts[domain] = n
    return counts


def prepare(bench: Benchmark | str, root: str | Path, mirror: str | None = None, progress: bool = True,
            keep_archives: bool = True, log: Callable[[str], None] = print) -> dict:
    """Download, verify, extract and lay out ``bench`` under ``root``; returns a small report.

    ``mirror``: a base URL that serves the archives under their file names (tests use a local
    server). Archives are cached in ``root/.archives``.
    """
    bench = get_benchmark(bench) if isinstance(bench, str) else bench
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"dataset root {root} exists and is not a folder")
    if bench.name == "digits":
        build_digits(root)
        return {"dataset": "digits", "root": str(root)}
    if not bench.archives:
        raise DataError(f"{bench.name} has no downloadable archives")
    cache = root / ".archives"
    report = {"dataset": bench.name, "root": str(root), "archives": {}, "images": {}}
    for archive in bench.archives:
        path, digest, tree = _fetch_and_extract(archive, cache, mirror, progress, log)
        if archive.sha256 is None:
            log(f"warning: no sha256 is pinned for {archive.filename}; computed {digest}")
        report["archives"][archive.filename] = {"sha256": digest, "pinned": archive.sha256 is not None}
        own = tuple(d for d in bench.domains if archive.filename.startswith(d + ".")) or None
        report["images"].update(lay_out(bench, tree, root, own))
    if not keep_archives:
        shutil.rmtree(cache)
    return report
