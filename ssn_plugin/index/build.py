"""Bring an index folder up to date with a gallery: encode only new or changed files, drop
deleted ones, resume a build that was killed, split the encoding over processes."""
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ssn_plugin.image_io import file_stamp
from .folder import DEFAULT_SHARD_ROWS, IndexFolder

Entry = Tuple[str, str, List[int]]  # name, real path, [size, mtime_ns]
# encode(paths, failures) -> float features [n, D] of the readable ones, in order; the
# unreadable ones go to failures (path -> reason).
Encoder = Callable[[Sequence[str], Dict[str, str]], np.ndarray]


def plan_update(folder: IndexFolder, names: Sequence[str], paths: Sequence[str]
                ) -> Tuple[List[int], List[Entry]]:
    """Which rows to remove (deleted or changed files, or a file under a new name) and which
    files to encode (new or changed), in gallery order."""
    alive = folder.alive_entries()
    wanted, encode = set(), []
    for name, path in zip(names, paths):
        real = osp.realpath(path)
        wanted.add(real)
        stamp = file_stamp(real)
        have = alive.get(real)
        if have is None or have[1] != name or list(have[2]) != stamp:
            encode.append((name, real, stamp))
    keep = wanted - {real for _, real, _ in encode}
    removed = [gid for real, (gid, _, _) in alive.items() if real not in keep]
    return sorted(removed), encode


def _chunks(entries: List[Entry], rows: int) -> List[List[Entry]]:
    return [entries[i:i + rows] for i in range(0, len(entries), rows)]


def _fits(part, chunk: List[Entry]) -> bool:
    """A written part is the encoding of a planned chunk: its rows and its unreadable files
    are exactly the chunk's files, with the same names and stamps."""
    if part is None:
        return False
    entries, failures = part
    planned = {(n, p, tuple(s)) for n, p, s in chunk}
    readable = {(n, p, tuple(s)) for n, p, s in entries}
    failed = {e for e in planned if e[1] in failures}
    return len(entries) == len(readable) and readable | failed == planned and \
        not readable & failed


def update_index_folder(folder: IndexFolder, names: Sequence[str], paths: Sequence[str],
                        encode: Encoder, shard_rows: int = DEFAULT_SHARD_ROWS, rank: int = 0,
                        world_size: int = 1, barrier: Callable[[], None] = lambda: None,
                        on_commit: Callable[[int], None] = lambda chunk: None,
                        progress: Optional[Callable[[int], None]] = None) -> dict:
    """Update ``folder`` (opened or created) to hold exactly the gallery ``names``/``paths``.

    Chunks of ``shard_rows`` files to encode are numbered in gallery order; process ``rank``
    of ``world_size`` encodes the chunks ``c`` with ``c % world_size == rank`` into parts.
    With one process each part is committed as soon as it is written; with several, rank 0
    commits them all in chunk order after ``barrier()``, so the shards are the same as one
    process writes. A part left by a killed build is reused when it fits its chunk.

    Returns:
        dict: ``removed`` (rows dropped), ``encoded`` (files encoded by this process),
        ``reused`` (files found in parts), and on rank 0 ``failures`` (path -> reason, the
        unreadable files of every rank; they stay out of the index and are tried again next
        time) and ``rows`` (rows alive after the update).
    """
    removed, to_encode = plan_update(folder, names, paths)
    chunks = _chunks(to_encode, shard_rows)
    barrier()  # every rank planned from the same manifest before rank 0 changes it
    report = dict(removed=len(removed), encoded=0, reused=0, failures={})
    if rank == 0:
        with folder.locked():
            folder.remove(removed)
    for number, chunk in enumerate(chunks):
        if number % world_size != rank:
            continue
        if _fits(folder.read_part(number), chunk):
            report['reused'] += len(chunk)
        else:
            failures: Dict[str, str] = {}
            feats = encode([real for _, real, _ in chunk], failures)
            readable = [e for e in chunk if e[1] not in failures]
            folder.write_part(number, feats if readable else
                              np.zeros((0, folder.dim), np.float32), readable, failures)
            report['encoded'] += len(chunk)
        if progress is not None:
            progress(len(chunk))
        if world_size == 1:
            report['failures'].update(folder.read_part(number)[1])
            with folder.locked():
                folder.commit_part(number)
            on_commit(number)
    barrier()
    if rank == 0:
        with folder.locked():
            if world_size > 1:
                for number in range(len(chunks)):
                    report['failures'].update(folder.read_part(number)[1])
                    folder.commit_part(number)
            folder.clear_parts()
        report['rows'] = sum(int(s.alive.sum()) for s in folder.shards())
    barrier()
    return report
