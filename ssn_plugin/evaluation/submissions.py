"""The test-server files: CIRR's two rc2 files and CIRCO's top-50 lists.

Written by the metrics when ``export_dir`` is set (``tools/test.py --export-dir DIR``);
docs/evaluation.md, sections 3 and 5, give the formats.
"""
import json
import os
import os.path as osp
from typing import List, Sequence

# The CIRR evaluation server's limit on an uploaded file.
CIRR_SERVER_MAX_BYTES = 5 * 1024 * 1024
# We know of no published size limit of the CIRCO server; a full test file (800 x 50 ids) is
# about 0.3 MB, so a file over this bound means a broken export.
CIRCO_SERVER_MAX_BYTES = 5 * 1024 * 1024


def dump_submission(path: str, content: dict, max_bytes: int, server: str,
                    sort_keys: bool = False) -> str:
    """Write a test-server file as compact JSON and refuse one over ``max_bytes``."""
    with open(path, 'w') as f:
        json.dump(content, f, sort_keys=sort_keys, separators=(',', ':'))
    size = osp.getsize(path)
    if size > max_bytes:
        raise RuntimeError(f'{path} is {size} bytes, over the {max_bytes} bytes allowed for an '
                           f'upload to the {server} server')
    return path


def write_cirr_submission(out_dir: str, name: str, pairids: Sequence[int],
                          top_names: Sequence[Sequence[str]],
                          subset_names: Sequence[Sequence[str]]) -> List[str]:
    """Write the two rc2 files the CIRR evaluation server expects (docs/evaluation.md, section 3).

    Returns:
        list[str]: the paths of ``recall_submission_<name>.json`` and
        ``recall_subset_submission_<name>.json``.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for metric, ranked in (('recall', top_names), ('recall_subset', subset_names)):
        content = {'version': 'rc2', 'metric': metric}
        content.update({str(int(p)): list(names) for p, names in zip(pairids, ranked)})
        paths.append(dump_submission(osp.join(out_dir, f'{metric}_submission_{name}.json'),
                                     content, CIRR_SERVER_MAX_BYTES, 'CIRR', sort_keys=True))
    return paths


def write_circo_submission(path: str, query_ids: Sequence[int],
                           top_ids: Sequence[Sequence[int]]) -> str:
    """Write the JSON the CIRCO evaluation server expects: ``{"<query id>": [50 image ids]}``.

    Every list must hold unique ids (the server rejects repeats); the file is checked against
    :data:`CIRCO_SERVER_MAX_BYTES`.
    """
    content = {}
    for query_id, ids in zip(query_ids, top_ids):
        ids = [int(i) for i in ids]
        if len(set(ids)) != len(ids):
            raise ValueError(f'query {query_id}: the exported list repeats image ids')
        content[str(int(query_id))] = ids
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    return dump_submission(path, content, CIRCO_SERVER_MAX_BYTES, 'CIRCO')
