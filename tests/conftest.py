"""The shared fixtures; the helpers they use live in tests/helpers/."""
import json

import pytest

from helpers import TINY_CLIP, make_tiny_cirr


@pytest.fixture
def tiny_clip_file(tmp_path):
    path = tmp_path / 'tiny_clip.json'
    path.write_text(json.dumps(TINY_CLIP))
    return str(path)


@pytest.fixture
def tiny_cirr(tmp_path):
    root = str(tmp_path / 'cirr_dataset')
    info = make_tiny_cirr(root)
    info['root'] = root
    return info
