"""`fxobj://`: a Beam filesystem with an object store's semantics (GCS's, as Beam 2.72's
GCSFileSystem presents them), kept in a local folder, so the code paths for `gs://` run here.

What makes it an object store and not a disk: there are no folders, only objects whose
names contain "/"; `exists` is true for an object only, never for a prefix; `delete` of a
name deletes that object (a name ending in "/" deletes every object under it); `mkdirs`
does nothing; `rename` is a copy and a delete per object, so a "folder" moves object by
object.  Importing this module registers the scheme (Beam finds FileSystem subclasses).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "fxobj"
ROOT = {"path": None}  # the local folder holding the objects; set by `use_root`


def use_root(folder: str | os.PathLike) -> None:
    ROOT["path"] = str(folder)


class ObjectStoreFileSystem(LocalFileSystem):
    @classmethod
    def scheme(cls):
        return SCHEME

    # names <-> local files ------------------------------------------------------------------

    @staticmethod
    def _local(url: str) -> str:
        assert url.startswith(f"{SCHEME}://"), url
        return os.path.join(ROOT["path"], url[len(SCHEME) + 3:])

    @staticmethod
    def _url(local: str) -> str:
        return f"{SCHEME}://" + os.path.relpath(local, ROOT["path"]).replace(os.sep, "/")

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def has_dirs(self):
        return False

    def mkdirs(self, path):
        pass  # an object store has no folders

    def _objects(self, prefix: str):
        root = Path(ROOT["path"])
        for file in sorted(root.rglob("*")):
            if file.is_file():
                url = self._url(str(file))
                if url.startswith(prefix):
                    yield url, file

    def _list(self, dir_or_prefix):
        for url, file in self._objects(dir_or_prefix):
            stat = file.stat()
            yield FileMetadata(url, stat.st_size, stat.st_mtime)

    def exists(self, path):
        return os.path.isfile(self._local(path))

    def size(self, path):
        return os.path.getsize(self._local(path))

    def last_updated(self, path):
        return os.path.getmtime(self._local(path))

    def metadata(self, path):
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def checksum(self, path):
        return str(self.size(path))

    def create(self, path, mime_type="application/octet-stream", compression_type="auto"):
        local = self._local(path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        return super().create(local, mime_type, compression_type)

    def open(self, path, mime_type="application/octet-stream", compression_type="auto"):
        return super().open(self._local(path), mime_type, compression_type)

    def copy(self, source_file_names, destination_file_names):
        for src, dst in zip(source_file_names, destination_file_names, strict=True):
            local = self._local(dst)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            shutil.copyfile(self._local(src), local)

    def rename(self, source_file_names, destination_file_names):
        self.copy(source_file_names, destination_file_names)  # no rename: copy, then delete
        self.delete(source_file_names)

    def delete(self, paths):
        for path in paths:
            if path.endswith("/"):
                for _, file in list(self._objects(path)):
                    file.unlink()
            elif os.path.isfile(self._local(path)):
                os.unlink(self._local(path))
