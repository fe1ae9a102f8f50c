"""Search by vector: every backend against brute force, one exclusion rule for all."""
import sys

import numpy as np
import pytest

from ssn_plugin.index import GalleryIndex
from ssn_plugin.index.folder import Shard


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng, n, d, clusters=100, spread=1.0):
    """Rows around a few centres, as real embeddings are (not uniform noise)."""
    centres = unit_rows(rng, clusters, d)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(queries, gallery, k, dead=(), exclude=None):
    """Ids of the k best rows by cosine, written out on the full score matrix: dead rows and
    each query's excluded rows scored -inf, ties by ascending id."""
    scores = queries.astype(np.float64) @ gallery.T.astype(np.float64)
    scores[:, list(dead)] = -np.inf
    for row, drop in enumerate(exclude or []):
        scores[row, list(drop)] = -np.inf
    order = np.argsort(-scores, axis=1, kind='stable')[:, :k]
    return order


def recall_at(ids, truth):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, truth)])


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return unit_rows(rng, 500, 24), unit_rows(rng, 9, 24)


def names_of(n):
    return [f'img{i:04d}.png' for i in range(n)]


def test_exact_search_equals_brute_force(data):
    gallery, queries = data
    index = GalleryIndex.from_features(gallery, names_of(len(gallery)))
    scores, ids = index.search_ids(queries, 10)
    assert np.array_equal(ids, brute_force(queries, gallery, 10))
    expected = np.take_along_axis(queries @ gallery.T, ids, axis=1)
    assert np.allclose(scores, expected, atol=1e-6)


def test_exact_search_over_shards_dead_rows_and_small_chunks(data):
    gallery, queries = data
    names = names_of(len(gallery))
    entries = [(n, n, [0, 0]) for n in names]
    alive = np.ones(len(gallery), bool)
    dead = [3, 250, 251, 499]
    alive[dead] = False
    # Three shards of uneven sizes; ids run on across them.
    cuts = [0, 120, 333, 500]
    shards = [Shard(gallery[a:b], entries[a:b], a, alive[a:b].copy(), f's{a}')
              for a, b in zip(cuts, cuts[1:])]
    for chunk_elems in (2**25, 700):  # one block, and a few queries at a time
        index = GalleryIndex(shards, 24, dict(type='exact', chunk_elems=chunk_elems))
        _, ids = index.search_ids(queries, 15)
        assert np.array_equal(ids, brute_force(queries, gallery, 15, dead=dead))
    assert len(index) == 496 and 'img0003.png' not in index.names


def test_exclusion_leaves_out_exactly_the_named_rows(data):
    gallery, queries = data
    index = GalleryIndex.from_features(gallery, names_of(len(gallery)))
    top = brute_force(queries, gallery, 3)
    exclude = [[int(top[0, 0])], [], [int(top[2, 0]), int(top[2, 2])]] + [[]] * 6
    _, ids = index.search_ids(queries, 5, exclude)
    assert np.array_equal(ids, brute_force(queries, gallery, 5, exclude=exclude))
    hits = index.search(queries[:1], 2, exclude=[[names_of(500)[top[0, 0]]]])
    assert [name for name, _ in hits[0]] == [names_of(500)[i] for i in top[0, 1:3]]


def test_fewer_rows_than_topk_pad_with_nothing():
    index = GalleryIndex.from_features(np.eye(3, dtype=np.float32), ['a', 'b', 'c'])
    hits = index.search(np.eye(3, dtype=np.float32)[:1], topk=10, exclude=[['a']])
    assert [n for n, _ in hits[0]] == ['b', 'c'] or [n for n, _ in hits[0]] == ['c', 'b']
    scores, ids = index.search_ids(np.eye(3, dtype=np.float32)[:1], 5)
    assert list(ids[0, 3:]) == [-1, -1] and np.isneginf(scores[0, 3:]).all()


def test_float16_storage_halves_memory_and_keeps_the_ranking(data):
    rng = np.random.default_rng(1)
    gallery, queries = clustered(rng, 3000, 64), clustered(rng, 20, 64)
    full = GalleryIndex.from_features(gallery, names_of(3000))
    half = GalleryIndex.from_features(gallery, names_of(3000), dtype='float16')
    assert half.shards[0].feats.nbytes * 2 == full.shards[0].feats.nbytes
    s32, i32 = full.search_ids(queries, 10)
    s16, i16 = half.search_ids(queries, 10)
    assert recall_at(i16, i32) >= 0.95
    # Re-scored in float32: scores differ only by the features' rounding (~1e-3).
    assert np.abs(s16 - s32).max() < 2e-3


def test_float16_search_without_torch_gives_the_same_hits(data, monkeypatch):
    """An ONNX serving install has no torch: float16 shards are scored by numpy in float32
    blocks instead, with the same ids and scores as through torch's half matmul."""
    from ssn_plugin.index import backends
    rng = np.random.default_rng(2)
    gallery, queries = clustered(rng, 1000, 32), clustered(rng, 7, 32)
    half = GalleryIndex.from_features(gallery, names_of(1000), dtype='float16')
    with_torch = half.search_ids(queries, 10)
    monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` raises ImportError
    half16 = half.shards[0].feats
    # Blocks of 300 rows: the last one is partial, so the concatenation is exercised.
    blocks = backends._half_scores(queries, half16, block_rows=300)
    written_out = queries @ half16.astype(np.float32).T
    assert blocks.shape == (7, 1000) and np.abs(blocks - written_out).max() < 1e-6
    without = GalleryIndex.from_features(gallery, names_of(1000), dtype='float16')
    scores, ids = without.search_ids(queries, 10)
    assert np.array_equal(ids, with_torch[1])
    assert np.abs(scores - with_torch[0]).max() < 1e-6


def test_features_are_checked_once_when_they_enter():
    bad = np.eye(4, dtype=np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r'1 feature rows hold NaN or inf \(first at row 2\)'):
        GalleryIndex.from_features(bad, list('abcd'))
    with pytest.raises(ValueError, match='one of each per image'):
        GalleryIndex.from_features(np.eye(4, dtype=np.float32), list('abc'))
    with pytest.raises(ValueError, match='names must be unique'):
        GalleryIndex.from_features(np.eye(2, dtype=np.float32), ['a', 'a'])
    index = GalleryIndex.from_features(np.eye(4, dtype=np.float32), list('abcd'))
    with pytest.raises(ValueError, match=r'expected \[N, 4\]'):
        index.search(np.ones((1, 3), np.float32))
    for topk in (0, -1, 2.5):
        with pytest.raises(ValueError, match='topk must be a positive int'):
            index.search(np.ones((1, 4), np.float32), topk=topk)


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match=r"unknown index backend 'annoy'; one of \['exact', "
                                         r"'faiss', 'milvus'\]"):
        GalleryIndex.from_features(np.eye(2, dtype=np.float32), ['a', 'b'], backend='annoy')


# ---------------------------------------------------------------- faiss
def test_faiss_flat_and_full_probe_ivf_equal_brute_force(data):
    pytest.importorskip('faiss', reason='the faiss extra is not installed')
    gallery, queries = data
    truth = brute_force(queries, gallery, 10)
    for backend in (dict(type='faiss', factory='Flat'),
                    dict(type='faiss', factory='IVF8,Flat', search_params='nprobe=8')):
        index = GalleryIndex.from_features(gallery, names_of(500), backend=backend)
        _, ids = index.search_ids(queries, 10)
        assert np.array_equal(ids, truth), backend  # every list probed: exact


def test_faiss_ann_recall_on_clustered_features(capsys):
    pytest.importorskip('faiss', reason='the faiss extra is not installed')
    rng = np.random.default_rng(2)
    gallery, queries = clustered(rng, 20000, 32), clustered(rng, 50, 32)
    truth = brute_force(queries, gallery, 10)
    recalls = {}
    for factory in ('IVF64,Flat', 'HNSW32'):
        index = GalleryIndex.from_features(gallery, names_of(20000),
                                           backend=dict(type='faiss', factory=factory))
        recalls[factory] = recall_at(index.search_ids(queries, 10)[1], truth)
    print('faiss recall@10 on clustered features:', recalls)
    # The default settings (nprobe = nlist/16, at least 8; efSearch=128) find most of the
    # true top 10 (0.81 and 0.96 when written).
    assert min(recalls.values()) >= 0.75


def test_faiss_refuses_too_few_training_rows():
    pytest.importorskip('faiss', reason='the faiss extra is not installed')
    with pytest.raises(ValueError, match=r"'IVF64,Flat' needs at least 64 rows to train, the "
                                         r'gallery has 10'):
        GalleryIndex.from_features(unit_rows(np.random.default_rng(0), 10, 8), names_of(10),
                                   backend=dict(type='faiss', factory='IVF64,Flat'))


def test_a_missing_extra_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'faiss', None)
    with pytest.raises(ImportError, match=r"pip install 'ssn_plugin\[faiss\]'"):
        GalleryIndex.from_features(np.eye(2, dtype=np.float32), ['a', 'b'], backend='faiss')
    monkeypatch.setitem(sys.modules, 'pymilvus', None)
    with pytest.raises(ImportError, match=r"pip install 'ssn_plugin\[milvus\]'"):
        GalleryIndex.from_features(np.eye(2, dtype=np.float32), ['a', 'b'],
                                   backend=dict(type='milvus', uri='x.db'))


# ---------------------------------------------------------------- milvus
def test_milvus_lite_equals_brute_force(data, tmp_path):
    pytest.importorskip('pymilvus', reason='the milvus extra is not installed')
    gallery, queries = data
    db = tmp_path / 'gallery.db'
    index = GalleryIndex.from_features(gallery, names_of(500),
                                       backend=dict(type='milvus', uri=str(db)))
    assert db.exists()  # a real Milvus Lite database file
    _, ids = index.search_ids(queries, 10)
    assert np.array_equal(ids, brute_force(queries, gallery, 10))
    exclude = [[int(i)] for i in ids[:, 0]]
    _, ids2 = index.search_ids(queries, 5, exclude)
    assert np.array_equal(ids2, brute_force(queries, gallery, 5, exclude=exclude))


def test_milvus_in_memory_index_needs_a_uri():
    pytest.importorskip('pymilvus', reason='the milvus extra is not installed')
    with pytest.raises(ValueError, match='needs a uri'):
        GalleryIndex.from_features(np.eye(2, dtype=np.float32), ['a', 'b'], backend='milvus')


def test_faiss_trains_on_a_seeded_sample_of_the_gallery(data):
    pytest.importorskip('faiss', reason='the faiss extra is not installed')
    from ssn_plugin.index.backends import FaissBackend
    gallery, queries = data
    names = names_of(500)
    index = GalleryIndex.from_features(gallery, names, backend=dict(
        type='faiss', factory='IVF4,Flat', train_rows=40, search_params='nprobe=4'))
    sample = index.backend._training_sample()
    again = FaissBackend(train_rows=40, seed=0)
    again.index = index
    other = FaissBackend(train_rows=40, seed=1)
    other.index = index
    assert sample.shape == (40, 24)
    ids = [index.id_of_name(n) for n in names]
    rows = {tuple(r) for r in np.round(index.features(ids), 6)}
    assert all(tuple(r) in rows for r in np.round(sample, 6))  # gallery rows
    assert len({tuple(r) for r in sample}) == 40  # without repeats
    assert np.array_equal(again._training_sample(), sample)  # seeded
    assert not np.array_equal(other._training_sample(), sample)
    all_rows = FaissBackend(train_rows=500)
    all_rows.index = index
    assert np.array_equal(all_rows._training_sample(), gallery)  # no sample when it fits
    _, found = index.search_ids(queries, 10)  # trained on the sample, every list probed
    assert np.array_equal(found, brute_force(queries, gallery, 10))


def test_faiss_default_settings_are_the_documented_ones():
    pytest.importorskip('faiss', reason='the faiss extra is not installed')
    from ssn_plugin.index.backends import FaissBackend
    assert FaissBackend.auto_factory(19_999) == 'Flat'
    assert FaissBackend.auto_factory(100_000) == 'IVF1024,Flat'
    assert FaissBackend.auto_factory(1_000_000) == 'IVF4096,Flat'
    rng = np.random.default_rng(4)
    gallery = clustered(rng, 3000, 16)
    ivf = GalleryIndex.from_features(gallery, names_of(3000),
                                     backend=dict(type='faiss', factory='IVF256,Flat'))
    assert ivf.backend.factory_used == 'IVF256,Flat' and ivf.backend.params_used == 'nprobe=16'
    small = GalleryIndex.from_features(gallery, names_of(3000),
                                       backend=dict(type='faiss', factory='IVF64,Flat'))
    assert small.backend.params_used == 'nprobe=8'  # nlist/16 but at least 8
    hnsw = GalleryIndex.from_features(gallery, names_of(3000),
                                      backend=dict(type='faiss', factory='HNSW16'))
    assert hnsw.backend.params_used == 'efSearch=128'
    auto = GalleryIndex.from_features(gallery, names_of(3000), backend='faiss')
    assert auto.backend.factory_used == 'Flat' and auto.backend.params_used == ''


def test_ann_scores_are_the_cosines_and_short_lists_stay_short():
    pytest.importorskip('faiss', reason='the faiss extra is not installed')
    rng = np.random.default_rng(5)
    gallery = unit_rows(rng, 300, 8)
    index = GalleryIndex.from_features(gallery, names_of(300), backend=dict(
        type='faiss', factory='IVF32,Flat', search_params='nprobe=1'))
    scores, ids = index.search_ids(gallery[:20], 40)  # one list of ~10 rows probed
    for s_row, i_row, query in zip(scores, ids, gallery[:20]):
        found = i_row >= 0
        assert 0 < found.sum() < 40  # fewer than asked: the probed list is short
        assert np.isneginf(s_row[~found]).all()
        assert np.allclose(s_row[found], gallery[i_row[found]] @ query, atol=1e-5)
    assert (ids[:, 0] == np.arange(20)).all() and np.allclose(scores[:, 0], 1.0, atol=1e-5)
