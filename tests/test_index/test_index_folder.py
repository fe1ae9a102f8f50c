"""The index folder: grows with the gallery, resumes a killed build, splits over processes,
refuses what is not its own, exports for other tools; FAISS and Milvus follow it."""
import json
import os
import os.path as osp
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ssn_plugin.index import GalleryIndex, IndexFolder, IndexFolderError, update_index_folder

DIM = 16


def file_feature(path):
    """A stand-in encoder: a unit vector drawn from the file's bytes (equal files, equal
    features; a changed file, another feature)."""
    with open(path, 'rb') as f:
        seed = int.from_bytes(f.read()[-8:].rjust(8, b'\0'), 'little')
    x = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return x / np.linalg.norm(x)


class Encoder:
    """Counts the files it encodes; 'bad' files are unreadable."""

    def __init__(self):
        self.encoded = []

    def __call__(self, paths, failures):
        feats = []
        for path in paths:
            self.encoded.append(osp.basename(path))
            if 'bad' in osp.basename(path):
                failures[path] = 'OSError: truncated'
            else:
                feats.append(file_feature(path))
        return np.stack(feats) if feats else np.zeros((0, DIM), np.float32)


def write_files(folder, names, content='v1'):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        with open(osp.join(folder, name), 'w') as f:
            f.write(f'{name}:{content}')


def gallery(folder):
    names = sorted(os.listdir(folder))
    return names, [osp.join(folder, n) for n in names]


def build(root, images, encoder=None, shard_rows=3, **kwargs):
    folder = IndexFolder(root)
    if not folder.exists:
        folder.create('digest-a', DIM)
    folder.open('digest-a')
    names, paths = gallery(images)
    report = update_index_folder(folder, names, paths, encoder or Encoder(), shard_rows,
                                 **kwargs)
    return folder, report


def contents(root):
    """name -> feature of everything alive in an index folder."""
    index = GalleryIndex.open(root)
    return {name: index.features([index.id_of_name(name)])[0] for name in index.names}


def same_contents(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_build_holds_every_file_in_shards(tmp_path):
    images = str(tmp_path / 'images')
    write_files(images, [f'{i}.png' for i in range(8)])
    folder, report = build(str(tmp_path / 'index'), images)
    assert report['encoded'] == 8 and report['rows'] == 8 and report['failures'] == {}
    assert [s['rows'] for s in folder.manifest['shards']] == [3, 3, 2]
    index = GalleryIndex.open(folder.root)
    for name, path in zip(*gallery(images)):
        assert np.array_equal(index.features([index.id_of_name(name)])[0], file_feature(path))
        assert index.id_of_path(path) == index.id_of_name(name)
    assert not os.listdir(osp.join(folder.root, 'parts'))  # every part committed


def test_adding_changing_and_deleting_files_equals_a_fresh_build(tmp_path):
    images = str(tmp_path / 'images')
    write_files(images, [f'{i}.png' for i in range(7)])
    root = str(tmp_path / 'index')
    build(root, images)
    write_files(images, ['new1.png', 'new2.png'])           # added
    write_files(images, ['2.png'], content='changed')        # changed
    os.utime(osp.join(images, '2.png'), ns=(1, 1))
    os.remove(osp.join(images, '5.png'))                     # deleted
    encoder = Encoder()
    _, report = build(root, images, encoder)
    assert sorted(encoder.encoded) == ['2.png', 'new1.png', 'new2.png']  # nothing else
    assert report['removed'] == 2  # the deleted file and the old row of the changed one
    fresh = str(tmp_path / 'fresh')
    build(fresh, images)
    assert same_contents(contents(root), contents(fresh))
    # Nothing changed: nothing encoded, nothing removed.
    encoder = Encoder()
    _, report = build(root, images, encoder)
    assert encoder.encoded == [] and report['removed'] == 0


def test_a_renamed_file_is_indexed_under_its_new_name(tmp_path):
    images = str(tmp_path / 'images')
    write_files(images, ['a.png', 'b.png'])
    root = str(tmp_path / 'index')
    build(root, images)
    os.rename(osp.join(images, 'a.png'), osp.join(images, 'z.png'))
    build(root, images)
    assert sorted(GalleryIndex.open(root).names) == ['b.png', 'z.png']


def test_unreadable_files_are_reported_kept_out_and_tried_again(tmp_path):
    images = str(tmp_path / 'images')
    write_files(images, ['a.png', 'bad.png', 'c.png', 'd.png'])
    root = str(tmp_path / 'index')
    _, report = build(root, images)
    assert list(report['failures']) == [osp.realpath(osp.join(images, 'bad.png'))]
    assert sorted(GalleryIndex.open(root).names) == ['a.png', 'c.png', 'd.png']
    encoder = Encoder()
    _, report = build(root, images, encoder)
    assert encoder.encoded == ['bad.png'] and len(report['failures']) == 1


KILLED_BUILD = textwrap.dedent('''
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_index_folder import Encoder, build

    class Dies(Encoder):
        def __call__(self, paths, failures):
            if len(self.encoded) >= {after}:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind
            return super().__call__(paths, failures)

    build({root!r}, {images!r}, Dies())
''')


@pytest.mark.parametrize('after', [3, 9])
def test_a_killed_build_resumes_and_equals_an_uninterrupted_one(tmp_path, after):
    images = str(tmp_path / 'images')
    write_files(images, [f'{i:02d}.png' for i in range(11)])
    root = str(tmp_path / 'index')
    script = KILLED_BUILD.format(tests=osp.dirname(__file__), after=after, root=root,
                                 images=images)
    result = subprocess.run([sys.executable, '-c', script], capture_output=True)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    committed = IndexFolder(root).open().manifest['shards']
    # Killed while encoding the chunk after `after` files: those are committed, in shards.
    assert sum(s['rows'] for s in committed) == after
    encoder = Encoder()
    build(root, images, encoder)
    assert len(encoder.encoded) == 11 - after  # only what was not committed
    fresh = str(tmp_path / 'fresh')
    build(fresh, images)
    assert same_contents(contents(root), contents(fresh))


def test_parts_of_an_interrupted_multi_process_build_are_reused(tmp_path):
    images = str(tmp_path / 'images')
    write_files(images, [f'{i:02d}.png' for i in range(10)])
    root = str(tmp_path / 'index')
    # Rank 1 of 2 writes its parts (chunks 1 and 3), then the job dies before rank 0 commits.
    build(root, images, rank=1, world_size=2)
    assert sorted(os.listdir(osp.join(root, 'parts')))[:3] == [
        'part_000001.failed.json', 'part_000001.jsonl', 'part_000001.npy']
    encoder = Encoder()
    _, report = build(root, images, encoder)
    assert report['reused'] == 4 and sorted(encoder.encoded) == [
        '00.png', '01.png', '02.png', '06.png', '07.png', '08.png']
    fresh = str(tmp_path / 'fresh')
    build(fresh, images)
    assert same_contents(contents(root), contents(fresh))


def test_a_part_that_does_not_fit_its_chunk_is_encoded_again(tmp_path):
    images = str(tmp_path / 'images')
    write_files(images, [f'{i:02d}.png' for i in range(6)])
    root = str(tmp_path / 'index')
    build(root, images, rank=1, world_size=2)  # part 1 = 03, 04, 05
    write_files(images, ['04.png'], content='changed')
    os.utime(osp.join(images, '04.png'), ns=(1, 1))
    encoder = Encoder()
    build(root, images, encoder)
    assert sorted(encoder.encoded) == [f'{i:02d}.png' for i in range(6)]
    assert np.array_equal(contents(root)['04.png'], file_feature(osp.join(images, '04.png')))


def test_two_ranks_write_the_shards_one_process_writes(tmp_path):
    """Two ranks in turn (the barrier between them played by the order of calls) give the
    same shards, row for row, as one process; the real two-process run is in
    tests/test_index/test_build_index_tool.py."""
    images = str(tmp_path / 'images')
    write_files(images, [f'{i:02d}.png' for i in range(10)])
    one = str(tmp_path / 'one')
    build(one, images)
    two = str(tmp_path / 'two')
    build(two, images, rank=1, world_size=2)
    build(two, images, rank=0, world_size=2)
    a, b = IndexFolder(one).open(), IndexFolder(two).open()
    assert a.manifest['shards'] == b.manifest['shards']
    for sa, sb in zip(a.shards(), b.shards()):
        assert np.array_equal(sa.feats, sb.feats) and sa.entries == sb.entries


def test_an_index_of_other_weights_or_format_is_refused(tmp_path):
    images = str(tmp_path / 'images')
    write_files(images, ['a.png'])
    root = str(tmp_path / 'index')
    build(root, images)
    with pytest.raises(IndexFolderError, match='built by a different model'):
        IndexFolder(root).open('digest-b')
    with pytest.raises(IndexFolderError, match='already holds an index'):
        IndexFolder(root).create('digest-a', DIM)
    with pytest.raises(FileNotFoundError, match='no index in .*tools/build_index.py'):
        IndexFolder(str(tmp_path / 'nothing')).open()
    with pytest.raises(ValueError, match='dtype must be one of'):
        IndexFolder(str(tmp_path / 'x')).create('d', DIM, dtype='int8')


def test_damaged_files_are_named_with_the_rebuild_hint(tmp_path):
    images = str(tmp_path / 'images')
    write_files(images, ['a.png', 'b.png', 'c.png', 'd.png'])
    root = str(tmp_path / 'index')
    build(root, images)
    shard = osp.join(root, 'shards', 'shard_000001.npy')
    with open(shard, 'r+b') as f:
        f.truncate(100)
    with pytest.raises(IndexFolderError, match=r'shard_000001.npy cannot be read .*rebuild'):
        GalleryIndex.open(root)
    with open(osp.join(root, 'shards', 'shard_000000.jsonl'), 'a') as f:
        f.write('{not json\n')
    manifest = osp.join(root, 'manifest.json')
    with open(manifest) as f:
        text = f.read()
    with open(manifest, 'w') as f:
        f.write(text[:-20])
    with pytest.raises(IndexFolderError, match='manifest.json is damaged .*rebuild the index'):
        GalleryIndex.open(root)
    with open(manifest, 'w') as f:
        f.write(text)
    with pytest.raises(IndexFolderError, match=r'shard_000000.jsonl, line 4: not an entry'):
        GalleryIndex.open(root)


def test_export_writes_features_and_a_table_of_ids_names_paths(tmp_path):
    images = str(tmp_path / 'images')
    write_files(images, ['a.png', 'b\tc.png', 'd.png', 'e.png'])
    root = str(tmp_path / 'index')
    build(root, images)
    os.remove(osp.join(images, 'd.png'))
    build(root, images)
    features, table = IndexFolder(root).open().export(str(tmp_path / 'export'))
    feats = np.load(features)
    rows = [line.rstrip('\n').split('\t') for line in open(table)][1:]
    assert [r[1] for r in rows] == ['a.png', 'b\\tc.png', 'e.png']
    index = GalleryIndex.open(root)
    for row, (gallery_id, name, path) in zip(feats, rows):
        assert index.entry(int(gallery_id))[1] == path.replace('\\t', '\t')
        assert np.array_equal(row, index.features([int(gallery_id)])[0])


def test_faiss_index_follows_the_folder(tmp_path):
    pytest.importorskip('faiss', reason='the faiss extra is not installed')
    images = str(tmp_path / 'images')
    write_files(images, [f'{i:02d}.png' for i in range(9)])
    root = str(tmp_path / 'index')
    build(root, images)
    flat = dict(type='faiss', factory='Flat')
    GalleryIndex.open(root, backend=flat)
    saved = osp.getmtime(osp.join(root, 'faiss.index'))
    GalleryIndex.open(root, backend=flat)  # nothing changed: the saved index is used as is
    assert osp.getmtime(osp.join(root, 'faiss.index')) == saved
    write_files(images, ['new.png'])
    os.remove(osp.join(images, '03.png'))
    build(root, images)
    index = GalleryIndex.open(root, backend=flat)  # caught up: one added, one removed
    exact = GalleryIndex.open(root)
    queries = np.stack([file_feature(p) for p in gallery(images)[1]])
    assert np.array_equal(index.search_ids(queries, 5)[1], exact.search_ids(queries, 5)[1])
    assert json.load(open(osp.join(root, 'faiss.json')))['removed_count'] == 1


def test_milvus_lite_collection_follows_the_folder(tmp_path):
    pytest.importorskip('pymilvus', reason='the milvus extra is not installed')
    images = str(tmp_path / 'images')
    write_files(images, [f'{i:02d}.png' for i in range(9)])
    root = str(tmp_path / 'index')
    build(root, images)
    GalleryIndex.open(root, backend='milvus')
    assert osp.exists(osp.join(root, 'milvus.db'))
    write_files(images, ['new.png'])
    os.remove(osp.join(images, '03.png'))
    build(root, images)
    index = GalleryIndex.open(root, backend='milvus')
    assert json.load(open(osp.join(root, 'milvus.json')))['rows'] == 9
    exact = GalleryIndex.open(root)
    queries = np.stack([file_feature(p) for p in gallery(images)[1]])
    assert np.array_equal(index.search_ids(queries, 5)[1], exact.search_ids(queries, 5)[1])
    assert index.search(queries[:1], 1)[0][0][0] == '00.png'


@pytest.mark.parametrize('factory', ['Flat', 'HNSW16'])
def test_faiss_catches_up_with_additions_alone_and_removals_alone(tmp_path, factory):
    """HNSW cannot remove: the backend rebuilds it from the folder."""
    pytest.importorskip('faiss', reason='the faiss extra is not installed')
    images = str(tmp_path / 'images')
    write_files(images, [f'{i:02d}.png' for i in range(9)])
    root = str(tmp_path / 'index')
    build(root, images)
    backend = dict(type='faiss', factory=factory)
    GalleryIndex.open(root, backend=backend)
    write_files(images, ['new.png'])  # added only
    build(root, images)
    index = GalleryIndex.open(root, backend=backend)
    new = file_feature(osp.join(images, 'new.png'))[None]
    assert index.search(new, 1)[0][0][0] == 'new.png'
    os.remove(osp.join(images, '04.png'))  # removed only
    build(root, images)
    index = GalleryIndex.open(root, backend=backend)
    gone = file_feature(osp.join(images, 'new.png'))  # any query: 04 must not come back
    names = [n for n, _ in index.search(gone[None], 9)[0]]
    assert '04.png' not in names and len(names) == 9


def test_export_file_names_escapes_and_an_empty_index(tmp_path):
    images = str(tmp_path / 'images')
    write_files(images, ['a.png', 'back\\slash.png', 'new\nline.png'])
    root = str(tmp_path / 'index')
    build(root, images)
    out = str(tmp_path / 'export')
    features, table = IndexFolder(root).open().export(out)
    assert (features, table) == (osp.join(out, 'features.npy'), osp.join(out, 'table.tsv'))
    lines = open(table, encoding='utf-8').read().split('\n')
    assert lines[0] == 'id\tname\tpath'
    assert [line.split('\t')[1] for line in lines[1:4]] == ['a.png', 'back\\\\slash.png',
                                                            'new\\nline.png']
    IndexFolder(root).open().export(out)  # into a folder that exists: replaced
    for name in os.listdir(images):
        os.remove(osp.join(images, name))
    write_files(images, [])
    folder, _ = build(root, images)  # everything removed
    features, _ = folder.export(out)
    empty = np.load(features)
    assert empty.shape == (0, DIM) and empty.dtype == np.float32


def test_search_defaults_to_ten_and_takes_none_for_no_exclusion():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((30, DIM)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    index = GalleryIndex.from_features(feats, [f'{i}' for i in range(30)])
    hits = index.search(feats[:2], exclude=[None, ['1']])
    assert [len(h) for h in hits] == [10, 10]
    assert hits[0][0][0] == '0' and '1' not in [n for n, _ in hits[1]]
