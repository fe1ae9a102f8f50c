"""The search backends of a :class:`~ssn_plugin.index.GalleryIndex`, one interface:
``attach(index)`` (build or bring up to date what the backend keeps), ``search(queries, k)``
-> scores [N, k] float32 and ids [N, k] int64, best first, -1 where fewer than k are left.

- ``exact``: every alive row scored (numpy BLAS; float16 shards through torch, or numpy in
  float32 blocks where torch is not installed, re-scored in float32), shard by shard, so a
  memory-mapped gallery larger than memory still works;
- ``faiss``: an index from faiss's factory (``IVF4096,Flat``, ``HNSW32``, ``IVF16384,PQ64``...),
  trained on the gallery and saved in the index folder (``pip install 'ssn_plugin[faiss]'``);
- ``milvus``: a collection in a Milvus vector database through pymilvus: Milvus Lite (a local
  file, ``milvus.db`` in the index folder) by default, a server or cluster by its URI
  (``pip install 'ssn_plugin[milvus]'``).

FAISS and Milvus hold the index's row ids; ids are never reused, so growing the index folder
adds and removes rows there instead of rebuilding (an HNSW graph cannot remove: it is rebuilt).
"""
import json
import math
import os
import os.path as osp
import warnings
from typing import Optional, Tuple, Union

import numpy as np

from .folder import write_atomic

Result = Tuple[np.ndarray, np.ndarray]


def import_faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("the 'faiss' index backend needs faiss: "
                          "pip install 'ssn_plugin[faiss]' (or faiss-gpu)") from None
    return faiss


def import_milvus_client():
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise ImportError("the 'milvus' index backend needs pymilvus and Milvus Lite: "
                          "pip install 'ssn_plugin[milvus]'") from None
    return MilvusClient


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> Result:
    """The k best (score, id) of each row, best first; equal scores by ascending id."""
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, part, axis=1)
        ids = np.take_along_axis(ids, part, axis=1)
    order = np.lexsort((ids, -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> Result:
    """Rows of exactly k columns (-inf / -1 after the last hit)."""
    if scores.shape[1] >= k:
        return scores[:, :k], ids[:, :k]
    fill = k - scores.shape[1]
    return (np.pad(scores, ((0, 0), (0, fill)), constant_values=-np.inf),
            np.pad(ids, ((0, 0), (0, fill)), constant_values=-1))


def _alive_rows(shard):
    rows = np.flatnonzero(shard.alive)
    return rows, shard.base + rows


def _save_json(path: str, content: dict) -> None:
    text = json.dumps(content).encode()
    write_atomic(path, lambda f: f.write(text))


def _synced(index) -> dict:
    """What a backend's saved state records of the folder it holds: the shards and how many
    removals it has applied."""
    return dict(shards=[s.name for s in index.shards],
                removed_count=len(index.folder.manifest['removed']))


def _changes_since(index, state: dict):
    """The ids removed and the shards added since ``state`` (:func:`_synced`) was saved."""
    removed = index.folder.manifest['removed'][state['removed_count']:]
    synced = set(state['shards'])
    return removed, [s for s in index.shards if s.name not in synced]


def _load_json(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class SearchBackend:
    """What a backend implements (see the module docstring)."""

    name = ''

    def attach(self, index) -> None:
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> Result:
        raise NotImplementedError


class ExactBackend(SearchBackend):
    """Every alive row scored, shard by shard, in bounded memory.

    Args:
        chunk_elems (int): Similarities held at once per shard. Defaults to 2**25.
    """

    name = 'exact'

    def __init__(self, chunk_elems: int = 2**25):
        self.chunk_elems = chunk_elems

    def search(self, queries: np.ndarray, k: int) -> Result:
        best = (np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64))
        for shard in self.index.shards:
            if not shard.alive.any():
                continue
            rows = max(1, self.chunk_elems // len(shard))
            parts = [self._search_shard(queries[i:i + rows], shard, k)
                     for i in range(0, len(queries), rows)]
            scores = np.concatenate([best[0], np.concatenate([p[0] for p in parts])], axis=1)
            ids = np.concatenate([best[1], np.concatenate([p[1] for p in parts])], axis=1)
            best = top_k(scores, ids, k)
        return _pad(*best, k)

    @staticmethod
    def _search_shard(queries: np.ndarray, shard, k: int) -> Result:
        feats = shard.feats
        if feats.dtype == np.float16:
            scores = _half_scores(queries, feats)
        else:
            scores = queries @ feats.T
        dead = ~shard.alive
        if dead.any():
            scores[:, dead] = -np.inf
        k = min(k, int(shard.alive.sum()))
        ids = np.broadcast_to(shard.base + np.arange(len(shard)), scores.shape)
        if feats.dtype != np.float16:
            return top_k(scores, ids, k)
        # float16 scores are rounded to ~5e-4: re-score a wider candidate list in float32.
        cand_scores, cand = top_k(scores, ids, min(len(shard), 4 * k + 32))
        exact = np.einsum('nd,nmd->nm', queries,
                          np.asarray(feats[cand - shard.base], np.float32))
        exact[~np.isfinite(cand_scores)] = -np.inf
        return top_k(exact, cand, k)


def _half_scores(queries: np.ndarray, feats: np.ndarray, block_rows: int = 1 << 16
                 ) -> np.ndarray:
    """float16 gallery x float32 queries through torch's half matmul (numpy has no float16
    BLAS), as float32. Without torch (an ONNX serving install), blocks of ``block_rows``
    gallery rows are widened to float32 for numpy's BLAS instead."""
    try:
        import torch
    except ImportError:
        return np.concatenate(
            [np.zeros((len(queries), 0), np.float32)] +
            [queries @ np.asarray(feats[i:i + block_rows], np.float32).T
             for i in range(0, len(feats), block_rows)], axis=1)
    with warnings.catch_warnings():  # a read-only memory map: torch only reads it
        warnings.simplefilter('ignore', UserWarning)
        gallery = torch.from_numpy(np.asarray(feats))
    return (torch.from_numpy(queries).half() @ gallery.t()).float().numpy()


class FaissBackend(SearchBackend):
    """A faiss index over the gallery (inner product = cosine on normalised features).

    Args:
        factory (str, optional): A faiss index factory string (``'Flat'``, ``'IVF4096,Flat'``,
            ``'HNSW32'``, ``'IVF16384,PQ64'``, ...). None picks by gallery size: ``Flat`` below
            20,000 rows, else ``IVF{n},Flat`` with n the power of two nearest 4·sqrt(rows).
            Defaults to None.
        search_params (str): faiss ``ParameterSpace`` settings, e.g. ``'nprobe=32'`` or
            ``'efSearch=128'``. Empty: ``nprobe`` = nlist / 16 (at least 8) for IVF indexes,
            ``efSearch=128`` for HNSW.
            Defaults to ''.
        train_rows (int): Rows sampled (seeded) to train an index that needs training.
            Defaults to 200000.
        seed (int): Seed of that sample. Defaults to 0.
    """

    name = 'faiss'

    def __init__(self, factory: Optional[str] = None, search_params: str = '',
                 train_rows: int = 200_000, seed: int = 0):
        self.factory, self.search_params = factory, search_params
        self.train_rows, self.seed = train_rows, seed

    def attach(self, index) -> None:
        super().attach(index)
        self.faiss = import_faiss()
        factory = self.factory or self.auto_factory(len(index))
        state_path = index_path = None
        if index.folder is not None:
            index_path = osp.join(index.folder.root, 'faiss.index')
            state_path = osp.join(index.folder.root, 'faiss.json')
        state = _load_json(state_path) if state_path else None
        if state and state.get('factory') == factory and osp.isfile(index_path):
            self.faiss_index = self.faiss.read_index(index_path)
            changed = self._catch_up(state)
        else:
            self.faiss_index, state, changed = self._build(factory), None, True
        if index_path and changed:
            self._save(index_path, state_path, factory)
        self.factory_used = factory
        params = self.search_params or self._default_params(factory)
        if params:
            self.faiss.ParameterSpace().set_index_parameters(self.faiss_index, params)
        self.params_used = params

    @staticmethod
    def auto_factory(rows: int) -> str:
        if rows < 20_000:
            return 'Flat'
        return f'IVF{2 ** round(math.log2(4 * math.sqrt(rows)))},Flat'

    def _default_params(self, factory: str) -> str:
        ivf = self.faiss.try_extract_index_ivf(self.faiss_index)
        if ivf is not None:
            return f'nprobe={max(8, ivf.nlist // 16)}'
        # faiss's own efSearch (16) found under half of the true top 10 in our tests.
        return 'efSearch=128' if 'HNSW' in factory.upper() else ''

    def _new_index(self, factory: str):
        dim = self.index.dim
        if 'IVF' not in factory.upper():  # only IVF indexes take ids of their own
            factory = 'IDMap2,' + factory
        return self.faiss.index_factory(dim, factory, self.faiss.METRIC_INNER_PRODUCT)

    def _build(self, factory: str):
        faiss_index = self._new_index(factory)
        if not faiss_index.is_trained:
            sample = self._training_sample()
            nlist = getattr(self.faiss.try_extract_index_ivf(faiss_index), 'nlist', 0)
            if len(sample) < nlist:
                raise ValueError(f'faiss index {factory!r} needs at least {nlist} rows to '
                                 f'train, the gallery has {len(sample)}; use fewer lists')
            faiss_index.train(sample)
        for shard in self.index.shards:
            self._add_shard(faiss_index, shard)
        return faiss_index

    def _training_sample(self) -> np.ndarray:
        ids = self.index.ids
        if len(ids) > self.train_rows:
            rng = np.random.default_rng(self.seed)
            ids = np.sort(rng.choice(ids, self.train_rows, replace=False))
        return self.index.features(ids)

    @staticmethod
    def _add_shard(faiss_index, shard) -> None:
        rows, ids = _alive_rows(shard)
        for start in range(0, len(rows), 65536):
            part = rows[start:start + 65536]
            faiss_index.add_with_ids(np.asarray(shard.feats[part], np.float32),
                                     ids[start:start + 65536])

    def _catch_up(self, state: dict) -> bool:
        """Add the shards and remove the rows committed since the index was saved; an index
        that cannot remove (HNSW) is rebuilt. Returns whether anything changed."""
        removed, new = _changes_since(self.index, state)
        if not removed and not new:
            return False
        if removed:
            try:
                self.faiss_index.remove_ids(np.asarray(removed, np.int64))
            except RuntimeError:
                self.faiss_index = self._build(state['factory'])
                return True
        for shard in new:
            self._add_shard(self.faiss_index, shard)
        return True

    def _save(self, index_path: str, state_path: str, factory: str) -> None:
        tmp = f'{index_path}.tmp.{os.getpid()}'
        self.faiss.write_index(self.faiss_index, tmp)
        os.replace(tmp, index_path)
        _save_json(state_path, dict(factory=factory, **_synced(self.index)))

    def search(self, queries: np.ndarray, k: int) -> Result:
        scores, ids = self.faiss_index.search(queries, k)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, ids.astype(np.int64)


class MilvusBackend(SearchBackend):
    """The gallery in a Milvus collection (id = the index's row id, the vector; inner
    product metric).

    Args:
        uri (str, optional): Milvus Lite file (``*.db``) or server URI
            (``http://host:19530``). None: ``milvus.db`` in the index folder. Defaults to None.
        collection (str): Collection name. Defaults to ``'ssn_gallery'``.
        token (str): Server credentials (``user:password`` or an API key). Defaults to ''.
        index_type (str): Milvus index type (``FLAT``, ``IVF_FLAT``, ``HNSW``, ...; what the
            server supports). Defaults to ``'FLAT'``.
        index_params (dict, optional): Its build parameters (e.g. ``{'nlist': 1024}``).
        search_params (dict, optional): Its search parameters (e.g. ``{'nprobe': 32}``).
        batch_rows (int): Rows per insert call. Defaults to 5000.
    """

    name = 'milvus'

    def __init__(self, uri: Optional[str] = None, collection: str = 'ssn_gallery',
                 token: str = '', index_type: str = 'FLAT', index_params: Optional[dict] = None,
                 search_params: Optional[dict] = None, batch_rows: int = 5000):
        self.uri, self.collection, self.token = uri, collection, token
        self.index_type, self.index_params = index_type, dict(index_params or {})
        self.search_params, self.batch_rows = dict(search_params or {}), batch_rows

    def attach(self, index) -> None:
        super().attach(index)
        client_cls = import_milvus_client()
        folder = index.folder
        uri = self.uri or (osp.join(folder.root, 'milvus.db') if folder else None)
        if uri is None:
            raise ValueError("the 'milvus' backend of an index held in memory needs a uri "
                             "(a Milvus Lite file such as 'gallery.db', or a server)")
        self.uri_used = uri
        self.client = client_cls(uri, token=self.token) if self.token else client_cls(uri)
        state_path = osp.join(folder.root, 'milvus.json') if folder else None
        state = _load_json(state_path) if state_path else None
        wanted = dict(uri=uri, collection=self.collection, index_type=self.index_type,
                      index_params=self.index_params, dim=index.dim)
        if state and all(state.get(k) == v for k, v in wanted.items()) and \
                self.client.has_collection(self.collection) and \
                self._row_count() == state['rows']:
            changed = self._catch_up(state)
        else:
            self._create()
            for shard in index.shards:
                self._insert(shard)
            changed = True
        if changed:
            self._settle()
        if state_path and changed:
            _save_json(state_path, dict(wanted, **_synced(index), rows=self._row_count()))

    def _create(self) -> None:
        if self.client.has_collection(self.collection):
            self.client.drop_collection(self.collection)
        params = self.client.prepare_index_params()
        params.add_index(field_name='vector', index_type=self.index_type, metric_type='IP',
                         params=self.index_params)
        self.client.create_collection(self.collection, dimension=self.index.dim,
                                      metric_type='IP', auto_id=False, id_type='int',
                                      index_params=params)

    def _settle(self) -> None:
        """Seal what was written and load the collection with its index built: until then
        Milvus Lite scans unindexed rows (measured: ~0.9 s a query at 20k x 512 before,
        ~12 ms after; benchmarks/README.md)."""
        self.client.flush(self.collection)
        self.client.release_collection(self.collection)
        self.client.load_collection(self.collection)

    def _row_count(self) -> int:
        return int(self.client.get_collection_stats(self.collection)['row_count'])

    def _insert(self, shard) -> None:
        rows, ids = _alive_rows(shard)
        for start in range(0, len(rows), self.batch_rows):
            part = rows[start:start + self.batch_rows]
            vectors = np.asarray(shard.feats[part], np.float32)
            self.client.insert(self.collection, [
                dict(id=int(i), vector=v.tolist())
                for i, v in zip(ids[start:start + self.batch_rows], vectors)])

    def _catch_up(self, state: dict) -> bool:
        removed, new = _changes_since(self.index, state)
        if removed:
            self.client.delete(self.collection, ids=[int(i) for i in removed])
        for shard in new:
            self._insert(shard)
        return bool(removed or new)

    def search(self, queries: np.ndarray, k: int) -> Result:
        hits = self.client.search(self.collection, data=queries.tolist(), limit=k,
                                  search_params=dict(metric_type='IP',
                                                     params=self.search_params))
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        for row, found in enumerate(hits):
            for col, hit in enumerate(found[:k]):
                scores[row, col], ids[row, col] = hit['distance'], hit['id']
        return top_k(scores, ids, k)


BACKENDS = dict(exact=ExactBackend, faiss=FaissBackend, milvus=MilvusBackend)


def make_backend(spec: Union[str, dict, SearchBackend]) -> SearchBackend:
    """A backend from its name, a dict ``dict(type=name, **arguments)``, or itself."""
    if isinstance(spec, SearchBackend):
        return spec
    spec = dict(type=spec) if isinstance(spec, str) else dict(spec)
    name = spec.pop('type', 'exact')
    if name not in BACKENDS:
        raise ValueError(f'unknown index backend {name!r}; one of {sorted(BACKENDS)}')
    return BACKENDS[name](**spec)


def parse_backend(name: str, pairs) -> dict:
    """An index backend spec from ``--backend NAME --backend-args KEY=VALUE ...``: each value
    read as JSON when it is JSON (numbers, ``{"nlist": 1024}``), else kept as text
    (``factory=IVF4096,Flat``, ``search_params=nprobe=32``)."""
    spec = dict(type=name)
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep or not key:
            raise ValueError(f'--backend-args takes KEY=VALUE, got {pair!r}')
        try:
            spec[key] = json.loads(value)
        except ValueError:
            spec[key] = value
    return spec
