"""A searchable gallery: names, paths and features of the images, and the backend that ranks
them for a query vector (SSN's query is one vector against an ordinary image index)."""
import bisect
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .backends import SearchBackend, make_backend
from .folder import IndexFolder, Shard, checked_features

Hits = List[Tuple[str, float]]


class GalleryIndex:
    """Gallery features (in shards: one in memory, or many memory-mapped from an index
    folder) with their names and paths, searched through a backend.

    Every backend answers the same way: per query, up to ``topk`` ``(name, score)`` pairs,
    best first, the excluded ids left out (the backend is asked for more and the excluded ones
    dropped). The features were checked (shape, finite values) when they entered the index;
    a search checks only the queries' shape.

    Args:
        shards (list[Shard]): The features and entries.
        dim (int): Feature width.
        backend (str | dict | SearchBackend): ``'exact'``, ``'faiss'``, ``'milvus'`` or a dict
            ``dict(type='faiss', factory='IVF1024,Flat', ...)``. Defaults to ``'exact'``.
        folder (IndexFolder, optional): The folder the shards come from (backends keep their
            files there). Defaults to None.

    Examples:
        >>> import numpy as np
        >>> from ssn_plugin.index import GalleryIndex
        >>> feats = np.eye(3, dtype=np.float32)
        >>> index = GalleryIndex.from_features(feats, ['a', 'b', 'c'])
        >>> query = np.array([[0.0, 0.5, 0.75]], np.float32)
        >>> index.search(query, topk=2)
        [[('c', 0.75), ('b', 0.5)]]
        >>> index.search(query, topk=2, exclude=[['c']])
        [[('b', 0.5), ('a', 0.0)]]
    """

    def __init__(self, shards: List[Shard], dim: int,
                 backend: Union[str, dict, SearchBackend] = 'exact',
                 folder: Optional[IndexFolder] = None):
        self.shards, self.dim, self.folder = shards, dim, folder
        self._bases = [s.base for s in shards]
        alive = [(s, np.flatnonzero(s.alive)) for s in shards]
        self.ids = np.concatenate([s.base + rows for s, rows in alive]) if shards else \
            np.zeros(0, np.int64)
        self.names: List[str] = [s.entries[r][0] for s, rows in alive for r in rows]
        self.paths: List[str] = [s.entries[r][1] for s, rows in alive for r in rows]
        self._by_name = {name: int(i) for name, i in zip(self.names, self.ids)}
        self._by_path = {path: int(i) for path, i in zip(self.paths, self.ids)}
        self.backend = make_backend(backend)
        self.backend.attach(self)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_features(cls, feats, names: Sequence[str], paths: Optional[Sequence[str]] = None,
                      stamps: Optional[Sequence] = None, dtype: str = 'float32',
                      backend: Union[str, dict, SearchBackend] = 'exact') -> 'GalleryIndex':
        """An in-memory index of precomputed features [G, D] (L2-normalised) and their names
        (``paths`` default to the names)."""
        feats = checked_features(feats, None, dtype, 'index_features')
        names = [str(n) for n in names]
        paths = names if paths is None else [str(p) for p in paths]
        if not len(names) == len(paths) == feats.shape[0]:
            raise ValueError(f'{feats.shape[0]} feature rows, {len(names)} names and '
                             f'{len(paths)} paths; one of each per image')
        if len(set(names)) != len(names):
            raise ValueError('gallery names must be unique')
        stamps = [[0, 0]] * len(names) if stamps is None else [list(s) for s in stamps]
        shard = Shard(feats, list(zip(names, paths, stamps)), base=0, name='memory')
        return cls([shard], feats.shape[1], backend)

    @classmethod
    def open(cls, root: str, model_digest: Optional[str] = None,
             backend: Union[str, dict, SearchBackend] = 'exact') -> 'GalleryIndex':
        """The index in an index folder (see :mod:`ssn_plugin.index.folder`); refused when
        it was built by other weights (given ``model_digest``)."""
        folder = IndexFolder(root).open(model_digest)
        return cls(folder.shards(), folder.dim, backend, folder)

    # ------------------------------------------------------------------ lookup
    def __len__(self) -> int:
        return len(self.names)

    def entry(self, gallery_id: int) -> Tuple[str, str, List[int]]:
        """(name, path, stamp) of a row id."""
        shard = self.shards[bisect.bisect_right(self._bases, gallery_id) - 1]
        return shard.entries[gallery_id - shard.base]

    def id_of_path(self, path: str) -> int:
        """The id of an indexed file (symlinks resolved), -1 when it is not indexed."""
        return self._by_path.get(osp.realpath(path), self._by_path.get(path, -1))

    def id_of_name(self, name: str) -> int:
        return self._by_name.get(name, -1)

    def features(self, ids: Sequence[int]) -> np.ndarray:
        """float32 features of row ids (for re-scoring and tests)."""
        ids = np.asarray(ids, np.int64)
        out = np.empty((len(ids), self.dim), np.float32)
        which = np.searchsorted(self._bases, ids, side='right') - 1  # each id's shard
        for number in np.unique(which):
            shard, rows = self.shards[number], which == number
            out[rows] = shard.feats[ids[rows] - shard.base]  # one gather per shard
        return out

    # ------------------------------------------------------------------ search
    def search_ids(self, queries, topk: int, exclude: Optional[Sequence] = None
                   ) -> Tuple[np.ndarray, np.ndarray]:
        """Scores [N, k] and ids [N, k] (-1 and -inf where fewer are left), best first,
        ``exclude[i]`` (a collection of ids) left out of query i's list."""
        queries = np.ascontiguousarray(np.asarray(queries, np.float32))
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f'query features of shape {queries.shape}, expected [N, '
                             f'{self.dim}]')
        if type(topk) is not int or topk < 1:
            raise ValueError(f'topk must be a positive int, got {topk!r}')
        exclude = [set() if e is None else set(int(i) for i in e if i >= 0)
                   for e in (exclude if exclude is not None else [None] * len(queries))]
        if len(exclude) != len(queries):
            raise ValueError(f'{len(queries)} queries but {len(exclude)} exclusion lists')
        extra = max((len(e) for e in exclude), default=0)
        fetch = min(topk + extra, len(self))
        out_scores = np.full((len(queries), topk), -np.inf, np.float32)
        out_ids = np.full((len(queries), topk), -1, np.int64)
        if fetch == 0:
            return out_scores, out_ids
        scores, ids = self.backend.search(queries, fetch)
        for row, (s, i, drop) in enumerate(zip(scores, ids, exclude)):
            keep = [(score, gid) for score, gid in zip(s, i) if gid >= 0 and gid not in drop]
            keep = keep[:topk]
            out_scores[row, :len(keep)] = [k[0] for k in keep]
            out_ids[row, :len(keep)] = [k[1] for k in keep]
        return out_scores, out_ids

    def search(self, queries, topk: int = 10,
               exclude: Optional[Sequence[Optional[Sequence[str]]]] = None) -> List[Hits]:
        """Per query row, up to ``topk`` ``(name, score)`` pairs, best first; ``exclude[i]``
        (gallery names, or None) left out of query i's list."""
        exclude_ids = None if exclude is None else [
            [] if names is None else [self.id_of_name(n) for n in names] for names in exclude]
        return self.hits(*self.search_ids(queries, topk, exclude_ids))

    def hits(self, scores: np.ndarray, ids: np.ndarray) -> List[Hits]:
        """``search_ids``'s arrays as ``(name, score)`` lists (the -1 padding left out)."""
        return [[(self.entry(int(g))[0], float(s)) for s, g in zip(srow, irow) if g >= 0]
                for srow, irow in zip(scores, ids)]
