"""Downloads, unpacks and verifies an official DeepLab model-zoo checkpoint.

    python -m deeplab_load_tools.download_checkpoint xception65_coco_voc_trainaug [--dest=checkpoints]
    python -m deeplab_load_tools.download_checkpoint NAME --tarball=path/to/file.tar.gz   # already downloaded

The tarball is streamed to a temporary file (with a progress bar on stderr), checked against the
zoo's sha256 when one is recorded, unpacked safely (no absolute paths, no '..', no links or
devices), and the unpacked checkpoint is verified: it must be readable and hold exactly the
variables of the entry's model configuration (global_step, optimizer slots and EMA shadows are
allowed). Only then does it appear as ``<dest>/<NAME>/``.
"""
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib

from absl import app, flags

from deeplab_load.checkpoints import tf1, zoo
from deeplab_load.models.deeplab import BACKBONE_SCOPES, checkpoint_variables

FLAGS = flags.FLAGS
flags.DEFINE_string("dest", "checkpoints", "Folder that receives <dest>/<NAME>/.")
flags.DEFINE_string("tarball", None, "Use this local tarball instead of downloading.")
flags.DEFINE_string("url", None, "Download from this URL instead of the zoo's (a mirror).")
flags.DEFINE_bool("force", False, "Replace an existing <dest>/<NAME>/.")
flags.DEFINE_float("timeout", 60.0, "Network timeout in seconds.")

CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """The tarball could not be fetched (offline, unreachable, HTTP error)."""


class UnsafeTarballError(ValueError):
    """A tarball member would land outside the target folder or is not a plain file/folder."""


def progress_bar(done, total, width=40, stream=sys.stderr):
    """One carriage-returned line: bar, MB done / total, percent (total may be None)."""
    if total:
        filled = int(width * done / total)
        line = (f"\r[{'#' * filled}{'.' * (width - filled)}] {done / 1e6:7.1f} / "
                f"{total / 1e6:.1f} MB {100 * done / total:5.1f}%")
    else:
        line = f"\r{done / 1e6:7.1f} MB"
    stream.write(line)
    stream.flush()


def download(url, path, timeout=60.0, opener=urllib.request.urlopen, stream=sys.stderr):
    """Streams ``url`` into ``path``; returns its sha256. Raises DownloadError naming the URL."""
    digest = hashlib.sha256()
    try:
        with opener(url, timeout=timeout) as response, open(path, "wb") as out:
            length = response.headers.get("Content-Length") if response.headers else None
            total = int(length) if length else None
            done, last = 0, 0.0
            while True:
                chunk = response.read(CHUNK_BYTES)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if time.monotonic() - last > 0.2:
                    progress_bar(done, total, stream=stream)
                    last = time.monotonic()
            progress_bar(done, total, stream=stream)
            stream.write("\n")
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"could not download {url}: {reason}. Are you offline? Fetch the file by other means "
            f"and pass --tarball=PATH.") from error
    if total is not None and done != total:
        raise DownloadError(f"download of {url} stopped after {done} of {total} bytes")
    return digest.hexdigest()


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_members(archive, tar_path):
    """Refuses absolute paths, '..' components, links and special files."""
    for member in archive.getmembers():
        name = member.name
        parts = name.replace("\\", "/").split("/")
        if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts:
            raise UnsafeTarballError(f"{tar_path}: member {name!r} escapes the target folder")
        if not (member.isfile() or member.isdir()):
            raise UnsafeTarballError(f"{tar_path}: member {name!r} is a link or special file; "
                                     "refusing to unpack")


def safe_extract(tar_path, target):
    """Unpacks ``tar_path`` (any compression tarfile reads) into the existing folder ``target``."""
    try:
        with tarfile.open(tar_path) as archive:
            check_members(archive, tar_path)
            archive.extractall(target, filter="data")
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise UnsafeTarballError(f"{tar_path}: not a readable tarball, truncated or damaged "
                                 f"({error}); download it again") from error


def verify_checkpoint(name, folder, source=None):
    """The checkpoint prefix in ``folder`` after checking it holds the variables of zoo entry
    ``name`` and that every tensor reads back (raises tf1.CheckpointMismatchError /
    DamagedCheckpointError naming ``source``, the tarball or URL, or FileNotFoundError
    otherwise)."""
    entry = zoo.get_entry(name)
    source = source or folder
    prefix = tf1.resolve_checkpoint_prefix(folder)
    table = checkpoint_variables(zoo.build_from_zoo(name))
    backbone_scope = BACKBONE_SCOPES[entry.config.backbone] if entry.backbone_only else None
    try:
        shapes = tf1.checkpoint_reader(prefix).get_variable_to_shape_map()
        try:
            tf1.match_checkpoint(table, shapes, prefix, skip_mismatched_logits=False,
                                 backbone_scope=backbone_scope)
        except tf1.CheckpointMismatchError as err:
            raise tf1.CheckpointMismatchError(
                f"{os.path.relpath(prefix, folder)} in {source}", err.missing, err.unexpected,
                err.mismatched, fix=f"it is not the checkpoint of {name}: check NAME, --tarball "
                                    f"and --url") from err
        tf1.check_checkpoint_readable(prefix)
    except tf1.DamagedCheckpointError as err:
        raise tf1.DamagedCheckpointError(
            f"{os.path.relpath(err.file, folder)} in {source}", err.problem,
            fix="download it again (or pass another --tarball / --url)") from err
    return prefix


def fetch_checkpoint(name, dest, tarball=None, url=None, force=False, timeout=60.0,
                     opener=urllib.request.urlopen, stream=sys.stderr):
    """Puts zoo checkpoint ``name`` into ``<dest>/<name>/``; returns its checkpoint prefix."""
    entry = zoo.get_entry(name)
    target = os.path.join(dest, name)
    if os.path.exists(target) and not force:
        raise FileExistsError(f"{target} exists; pass --force to replace it")
    os.makedirs(dest, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{name}.", dir=dest)
    try:
        source = tarball
        if tarball is None:
            tarball = os.path.join(work, "download.tar.gz")
            source = url or entry.url
            stream.write(f"downloading {source}\n")
            digest = download(source, tarball, timeout=timeout, opener=opener, stream=stream)
        else:
            if not os.path.isfile(tarball):
                raise FileNotFoundError(f"--tarball {tarball} does not exist")
            digest = sha256_of(tarball)
        if entry.sha256 is not None and digest != entry.sha256:
            raise ValueError(f"sha256 of {tarball} is {digest}, the zoo expects {entry.sha256}")
        unpacked = os.path.join(work, "unpacked")
        os.mkdir(unpacked)
        safe_extract(tarball, unpacked)
        verify_checkpoint(name, unpacked, source)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(unpacked, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tf1.resolve_checkpoint_prefix(target)


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("usage: python -m deeplab_load_tools.download_checkpoint NAME "
                             f"[--dest=checkpoints]; NAME is one of {', '.join(sorted(zoo.ZOO))}")
    try:
        prefix = fetch_checkpoint(argv[1], FLAGS.dest, tarball=FLAGS.tarball, url=FLAGS.url,
                                  force=FLAGS.force, timeout=FLAGS.timeout)
    except (DownloadError, UnsafeTarballError, tf1.CheckpointMismatchError, FileExistsError,
            FileNotFoundError, ValueError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    print(f"checkpoint ready: {prefix}")
    return 0


def run():
    """The console script's entry point (setup.py)."""
    app.run(main)


if __name__ == "__main__":
    run()
