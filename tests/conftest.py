"""The shared fixtures; the helpers they use live in tests/helpers/."""
import json
import os

import pytest

from helpers import TINY_CLIP, make_tiny_cirr

# The multi-process tests run on this machine only: gloo over the loopback interface, as
# tools/dist_*.sh set it, whatever address the host name resolves to (inherited by the
# processes the tests start).
os.environ.setdefault('GLOO_SOCKET_IFNAME', 'lo')


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
