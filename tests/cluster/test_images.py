"""The node images' OCI archives: the layout containerd imports, byte for byte reproducible."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from whereabouts_py_dev.cluster.images import FileEntry, write_oci_archive


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            member.name: tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isfile()
        }


def test_archive_is_an_oci_layout_naming_the_image_for_containerd(tmp_path: Path) -> None:
    entries = [
        FileEntry("bin"),
        FileEntry("bin/tool", 0o755, data=b"#!/bin/sh\n"),
        FileEntry("bin/t", link="tool"),
    ]
    archive = tmp_path / "image.tar"
    write_oci_archive(archive, "localhost/example:dev", entries, {"Cmd": ["/bin/tool"]})

    files = _members(archive)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    [entry] = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/example:dev"
    # Every descriptor names a blob that is there, with that digest and size.
    for name, blob in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(blob).hexdigest() == name.rsplit("/", 1)[-1]
    manifest = json.loads(files[f"blobs/sha256/{entry['digest'].split(':')[1]}"])
    assert entry["size"] == len(files[f"blobs/sha256/{entry['digest'].split(':')[1]}"])
    [layer] = manifest["layers"]
    layer_blob = files[f"blobs/sha256/{layer['digest'].split(':')[1]}"]
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]  # an uncompressed layer
    assert config["config"] == {"Cmd": ["/bin/tool"]}
    (tmp_path / "layer.tar").write_bytes(layer_blob)
    with tarfile.open(tmp_path / "layer.tar") as tar:
        listed = {m.name: m for m in tar.getmembers()}
    assert sorted(listed) == ["bin", "bin/t", "bin/tool"]
    assert listed["bin/t"].issym() and listed["bin/t"].linkname == "tool"
    assert listed["bin/tool"].mode == 0o755 and listed["bin/tool"].mtime == 0


def test_same_entries_give_the_same_archive(tmp_path: Path) -> None:
    entries = [FileEntry("a", 0o644, data=b"x")]
    write_oci_archive(tmp_path / "one.tar", "localhost/a:1", entries, {})
    write_oci_archive(tmp_path / "two.tar", "localhost/a:1", list(reversed(entries)), {})
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
