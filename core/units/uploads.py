"""A held-out photo set from browser uploads (several image files, or zips of them), made safe, and the
default photo set an ImageNet model gets at first start.

Zips are read member by member, never extracted blindly: at most MAX_MEMBERS entries and MAX_TOTAL_BYTES
uncompressed (checked against the declared sizes first, then while reading, since a header can lie), and
an archive naming a path outside itself (`../x`, `/etc/x`, `C:\\x`) is refused whole. Entries that are not
images (folders, `__pycache__`, text files, undecodable files) are skipped and reported. Saved files land
in a folder named by the content's hash, so uploading the same photos again reuses the activation cache.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from core import config
from core.data.images import open_image
from core.errors import ImageInputError
from core.units.images import write_sample_folder

MAX_MEMBERS = 5_000
MAX_TOTAL_BYTES = 200 * 2**20
SAMPLE_CROPS = 20  # per photo: 4 photos x 20 crops = 80 images, enough for a verdict at the photo sets' k
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Upload:
    """The folder the uploaded photos were saved in, and what was left out and why."""

    folder: Path
    saved: int = 0
    skipped: list[str] = field(default_factory=list)


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":")


def _zip_members(name: str, data: bytes) -> list[tuple[str, bytes]]:
    """The files of one zip, read within the limits; raises ImageInputError for an unsafe archive."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ImageInputError(f"{name} is not a readable zip file.") from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ImageInputError(f"{name} holds {len(infos)} entries; the limit is {MAX_MEMBERS}.")
        unsafe = [i.filename for i in infos if _unsafe(i.filename)]
        if unsafe:
            raise ImageInputError(f"{name} names paths outside the archive ({unsafe[0]}); refused.")
        if sum(i.file_size for i in infos) > MAX_TOTAL_BYTES:
            raise ImageInputError(f"{name} unpacks to more than {MAX_TOTAL_BYTES // 2**20} MB; refused.")
        members, budget = [], MAX_TOTAL_BYTES
        for info in infos:
            if info.is_dir():
                continue
            with archive.open(info) as member:
                content = member.read(min(info.file_size, budget) + 1)
            if len(content) > info.file_size or len(content) > budget:
                raise ImageInputError(f"{name}: {info.filename} unpacks larger than it declares; refused.")
            budget -= len(content)
            members.append((info.filename, content))
    return members


def _relative_path(name: str, common_root: str | None) -> PurePosixPath:
    """Where a member is saved: `class/file` when it sits in a folder (its last folder is its class)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if common_root is not None:
        parts = parts[1:]
    return PurePosixPath(*parts[-2:])


def _common_root(names: Sequence[str]) -> str | None:
    """The single top folder every member shares (zips of a folder usually have one), else None."""
    tops = {PurePosixPath(n.replace("\\", "/")).parts[0] for n in names}
    deep = all(len(PurePosixPath(n.replace("\\", "/")).parts) > 1 for n in names)
    return tops.pop() if len(tops) == 1 and deep else None


def save_uploads(files: Sequence[tuple[str, bytes]], root: Path | None = None) -> Upload:
    """Save uploaded images (and the images inside uploaded zips) as one photo folder, one sub-folder per
    class when the zip had folders. Raises ImageInputError when nothing usable remains."""
    entries: list[tuple[str, bytes]] = []
    for name, data in files:
        if name.lower().endswith(".zip"):
            entries += _zip_members(name, data)
        else:
            entries.append((PurePosixPath(name.replace("\\", "/")).name, data))
    digest = hashlib.sha256()
    for name, data in entries:
        digest.update(f"{name}:{len(data)}\n".encode() + hashlib.sha256(data).digest())
    folder = (root or config.cache_dir() / "units" / "uploads") / digest.hexdigest()[:16]
    upload = Upload(folder)
    common = _common_root([n for n, _ in entries]) if entries else None
    keep: list[tuple[PurePosixPath, bytes]] = []
    for name, data in entries:
        path = _relative_path(name, common)
        if (
            any(part.startswith((".", "__")) for part in path.parts)
            or path.suffix.lower() not in IMAGE_SUFFIXES
        ):
            upload.skipped.append(f"{name} (not an image)")
            continue
        try:
            open_image(data, name)
        except ImageInputError as exc:
            upload.skipped.append(f"{name} ({exc})")
            continue
        keep.append((path, data))
    if not keep:
        raise ImageInputError(
            f"The upload holds no readable images ({len(upload.skipped)} entries skipped). Upload .jpg/.png "
            "photos, or a zip of them, optionally one folder per class."
        )
    if len({len(p.parts) for p, _ in keep}) > 1:  # mixed: loose files beside class folders
        upload.skipped += [f"{p} (beside the class folders)" for p, _ in keep if len(p.parts) == 1]
        keep = [(p, d) for p, d in keep if len(p.parts) == 2]
    if not folder.is_dir():  # same content, same folder: the activation cache stays valid
        tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
        for path, data in keep:
            (tmp / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp / path).write_bytes(data)
        os.replace(tmp, folder)
    upload.saved = len(keep)
    return upload


def default_photo_folder() -> Path:
    """A small labelled photo set generated from scikit-image's sample photos (nothing is downloaded),
    made once under the cache folder, so an ImageNet model has something to show at first start."""
    folder = config.cache_dir() / "units" / f"sample_photos_{SAMPLE_CROPS}"
    if not folder.is_dir():
        tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
        write_sample_folder(tmp, crops_per_photo=SAMPLE_CROPS)
        os.replace(tmp, folder)
    return folder
