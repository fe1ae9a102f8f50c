"""An on-disk gallery index that grows: features in memory-mapped shards, one entry table per
shard, a manifest that is replaced atomically.

Layout of an index folder::

    INDEX_DIR/
    ├── manifest.json         format, version, model digest, width, dtype, the shards, the
    │                         ids removed since, the next free id, a generation counter
    ├── shards/
    │   ├── shard_000000.npy  float32 or float16 [n, D], L2-normalised, finite
    │   └── shard_000000.jsonl one line per row: [name, real path, size, mtime_ns]
    ├── parts/                encoded chunks not yet committed (a multi-process build, or
    │                         one that was killed); reused by the next build when they fit
    └── <backend files>       faiss.index, milvus.db, ... (derived; rebuilt when stale)

A row's id is ``shard base + row``; ids are never reused, so a backend that holds ids (FAISS,
Milvus) stays valid while the folder grows. A changed file is removed and encoded again under
a new id; a deleted file is removed. Every write is a temporary file, flushed and renamed, so a
process killed at any point leaves the folder as it was before the write or after it.
"""
import fcntl
import json
import os
import os.path as osp
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

FOLDER_FORMAT = 1
MANIFEST = 'manifest.json'
DTYPES = ('float32', 'float16')
# Rows per shard (and per encoded chunk): 64 MiB of float32 features at D = 256.
DEFAULT_SHARD_ROWS = 65536


class IndexFolderError(ValueError):
    """An index folder that is damaged, of another model or of another format."""


def write_atomic(path: str, write: Callable) -> None:
    """``write(file)`` into ``path`` through a temporary file that is flushed and renamed."""
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'wb') as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_rows(path: str, entries: Sequence[Tuple[str, str, Sequence[int]]]) -> None:
    lines = ''.join(json.dumps([name, path_, int(stamp[0]), int(stamp[1])]) + '\n'
                    for name, path_, stamp in entries)
    write_atomic(path, lambda f: f.write(lines.encode()))


def _read_rows(path: str) -> List[Tuple[str, str, List[int]]]:
    rows = []
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            try:
                name, real, size, mtime = json.loads(line)
            except ValueError as err:
                raise IndexFolderError(f'{path}, line {number}: not an entry '
                                       f'[name, path, size, mtime_ns] ({err})') from None
            rows.append((name, real, [size, mtime]))
    return rows


def checked_features(feats, dim: Optional[int], dtype: str, what: str) -> np.ndarray:
    """Features as a C-contiguous array of ``dtype`` [n, D], after the one check of shape and
    finiteness they get (when they enter an index; never per query)."""
    feats = np.ascontiguousarray(np.asarray(feats, dtype=np.float32))
    if feats.ndim != 2 or (dim is not None and feats.shape[1] != dim):
        raise ValueError(f'{what}: features of shape {feats.shape}, expected [n, '
                         f'{dim if dim is not None else "D"}]')
    bad = np.flatnonzero(~np.isfinite(feats).all(axis=1))
    if bad.size:
        raise ValueError(f'{what}: {bad.size} feature rows hold NaN or inf (first at row '
                         f'{int(bad[0])}); a NaN similarity would rank above every other')
    return feats.astype(dtype, copy=False)


class Shard:
    """One shard: features (memory-mapped), its entries, which rows are alive."""

    def __init__(self, feats: np.ndarray, entries: List[Tuple[str, str, List[int]]],
                 base: int, alive: Optional[np.ndarray] = None, name: str = ''):
        if len(entries) != feats.shape[0]:
            raise IndexFolderError(f'shard {name}: {feats.shape[0]} feature rows but '
                                   f'{len(entries)} entries')
        self.feats, self.entries, self.base, self.name = feats, entries, base, name
        self.alive = np.ones(len(entries), bool) if alive is None else alive

    def __len__(self) -> int:
        return len(self.entries)


class IndexFolder:
    """Read and grow an index folder (see the module docstring for the layout).

    Args:
        root (str): The folder (created on :meth:`create`).
    """

    def __init__(self, root: str):
        self.root = root
        self.manifest: Optional[dict] = None

    # ------------------------------------------------------------------ paths
    def _path(self, *parts: str) -> str:
        return osp.join(self.root, *parts)

    @property
    def exists(self) -> bool:
        return osp.isfile(self._path(MANIFEST))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time (an flock on ``.lock``)."""
        os.makedirs(self.root, exist_ok=True)
        with open(self._path('.lock'), 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # ------------------------------------------------------------------ manifest
    def create(self, model_digest: str, dim: int, dtype: str = 'float32',
               version: str = '') -> 'IndexFolder':
        """A new, empty index folder (refused when one is there)."""
        if dtype not in DTYPES:
            raise ValueError(f'dtype must be one of {DTYPES}, got {dtype!r}')
        if self.exists:
            raise IndexFolderError(f'{self.root} already holds an index')
        for sub in ('shards', 'parts'):
            os.makedirs(self._path(sub), exist_ok=True)
        self.manifest = dict(format=FOLDER_FORMAT, version=version, model_digest=model_digest,
                             dim=int(dim), dtype=dtype, next_id=0, generation=0, shards=[],
                             removed=[])
        self._save_manifest()
        return self

    def open(self, model_digest: Optional[str] = None) -> 'IndexFolder':
        """Read the manifest; refuse another format or (given ``model_digest``) an index of
        other weights."""
        path = self._path(MANIFEST)
        if not osp.isfile(path):
            raise FileNotFoundError(f'no index in {self.root} (no {MANIFEST}); build one with '
                                    'tools/build_index.py')
        try:
            with open(path, encoding='utf-8') as f:
                manifest = json.load(f)
        except ValueError as err:
            raise IndexFolderError(f'{path} is damaged ({err}); rebuild the index') from None
        if not isinstance(manifest, dict) or manifest.get('format') != FOLDER_FORMAT:
            raise IndexFolderError(f'{path} is not an ssn_plugin index folder of format '
                                   f'{FOLDER_FORMAT}')
        if model_digest is not None and manifest['model_digest'] != model_digest:
            raise IndexFolderError(
                f'{self.root} was built by a different model (weights digest '
                f'{manifest["model_digest"][:12]}..., this model {model_digest[:12]}...); '
                'rebuild the index with this checkpoint')
        self.manifest = manifest
        return self

    def _save_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=1).encode()
        write_atomic(self._path(MANIFEST), lambda f: f.write(text))

    @property
    def dim(self) -> int:
        return self.manifest['dim']

    @property
    def dtype(self) -> str:
        return self.manifest['dtype']

    @property
    def generation(self) -> int:
        """Grows by one with every committed change (backends compare it to know if stale)."""
        return self.manifest['generation']

    # ------------------------------------------------------------------ reading
    def shards(self) -> List[Shard]:
        """Every shard, features memory-mapped, removed rows marked dead."""
        removed = np.asarray(self.manifest['removed'], np.int64)
        shards = []
        for info in self.manifest['shards']:
            stem = self._path('shards', info['name'])
            try:
                feats = np.load(stem + '.npy', mmap_mode='r')
            except (OSError, ValueError) as err:
                raise IndexFolderError(f'{stem}.npy cannot be read ({err}); rebuild the '
                                       'index') from None
            if feats.shape != (info['rows'], self.dim) or feats.dtype != np.dtype(self.dtype):
                raise IndexFolderError(f'{stem}.npy holds {feats.dtype} {feats.shape}, the '
                                       f'manifest says {self.dtype} ({info["rows"]}, '
                                       f'{self.dim}); rebuild the index')
            ids = np.arange(info['base'], info['base'] + info['rows'])
            shards.append(Shard(feats, _read_rows(stem + '.jsonl'), info['base'],
                                ~np.isin(ids, removed), info['name']))
        return shards

    def alive_entries(self) -> Dict[str, Tuple[int, str, List[int]]]:
        """Real path -> (id, name, stamp) of every row that is alive."""
        alive = {}
        for shard in self.shards():
            for row in np.flatnonzero(shard.alive):
                name, real, stamp = shard.entries[row]
                alive[real] = (shard.base + int(row), name, stamp)
        return alive

    # ------------------------------------------------------------------ writing
    def remove(self, ids: Sequence[int]) -> None:
        """Mark rows removed (one committed change)."""
        if len(ids):
            self.manifest['removed'] = sorted(set(self.manifest['removed']) | set(map(int, ids)))
            self.manifest['generation'] += 1
            self._save_manifest()

    def part_stem(self, chunk: int) -> str:
        return self._path('parts', f'part_{chunk:06d}')

    def write_part(self, chunk: int, feats, entries: Sequence[Tuple[str, str, List[int]]],
                   failures: Optional[Dict[str, str]] = None) -> None:
        """An encoded chunk, not committed: its features, the files that could not be read
        (path -> reason), and last its entry table, which marks the part complete."""
        feats = checked_features(feats, self.dim, self.dtype, f'chunk {chunk}')
        if len(entries) != feats.shape[0]:
            raise ValueError(f'chunk {chunk}: {feats.shape[0]} features for {len(entries)} '
                             'files')
        stem = self.part_stem(chunk)
        if osp.exists(stem + '.jsonl'):  # a stale part of this number is incomplete from now
            os.remove(stem + '.jsonl')
        write_atomic(stem + '.npy', lambda f: np.save(f, feats))
        failed = json.dumps(dict(failures or {})).encode()
        write_atomic(stem + '.failed.json', lambda f: f.write(failed))
        _write_rows(stem + '.jsonl', entries)

    def read_part(self, chunk: int
                  ) -> Optional[Tuple[List[Tuple[str, str, List[int]]], Dict[str, str]]]:
        """The entries and failures of a complete part, or None."""
        stem = self.part_stem(chunk)
        if not all(osp.isfile(stem + ext) for ext in ('.npy', '.failed.json', '.jsonl')):
            return None
        try:
            with open(stem + '.failed.json', encoding='utf-8') as f:
                failures = json.load(f)
            return _read_rows(stem + '.jsonl'), failures
        except (IndexFolderError, ValueError):
            return None

    def commit_part(self, chunk: int) -> None:
        """Move a written part into the shards, under the next free ids (one committed
        change)."""
        stem = self.part_stem(chunk)
        entries = _read_rows(stem + '.jsonl')
        name = f'shard_{len(self.manifest["shards"]):06d}'
        if not entries:  # every file of the chunk was unreadable
            return
        shard = self._path('shards', name)
        os.replace(stem + '.npy', shard + '.npy')
        os.replace(stem + '.jsonl', shard + '.jsonl')
        self.manifest['shards'].append(dict(name=name, base=self.manifest['next_id'],
                                            rows=len(entries)))
        self.manifest['next_id'] += len(entries)
        self.manifest['generation'] += 1
        self._save_manifest()

    def clear_parts(self, keep: Sequence[int] = ()) -> None:
        """Remove parts (and temporary files) except the chunks in ``keep``."""
        folder = self._path('parts')
        keep_stems = {osp.basename(self.part_stem(c)) for c in keep}
        for file in os.listdir(folder) if osp.isdir(folder) else []:
            if file.split('.')[0] not in keep_stems:
                os.remove(osp.join(folder, file))

    # ------------------------------------------------------------------ export
    def export(self, out: str) -> Tuple[str, str]:
        """``features.npy`` (float32, alive rows in id order) and ``table.tsv`` (id, name,
        path) for loading the gallery into another tool."""
        os.makedirs(out, exist_ok=True)
        feats, lines = [], ['id\tname\tpath\n']
        for shard in self.shards():
            rows = np.flatnonzero(shard.alive)
            feats.append(np.asarray(shard.feats[rows], np.float32))
            for row in rows:
                name, real, _ = shard.entries[row]
                lines.append(f'{shard.base + int(row)}\t{_tsv(name)}\t{_tsv(real)}\n')
        matrix = np.concatenate(feats) if feats else np.zeros((0, self.dim), np.float32)
        features, table = osp.join(out, 'features.npy'), osp.join(out, 'table.tsv')
        write_atomic(features, lambda f: np.save(f, matrix))
        write_atomic(table, lambda f: f.write(''.join(lines).encode()))
        return features, table


def _tsv(text: str) -> str:
    """A field of a tab-separated table: tabs, newlines and backslashes escaped."""
    return text.replace('\\', '\\\\').replace('\t', '\\t').replace('\n', '\\n')
