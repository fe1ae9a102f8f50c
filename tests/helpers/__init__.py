"""Helpers shared by the tests (fixtures live in tests/conftest.py only).

``data``: tiny open_clip configs, generated images and datasets; ``tools``: running the
command-line tools; ``browser``: the web page in headless Chromium (imported on its own,
``from helpers.browser import ...``, as it needs selenium).
"""
from .data import (GALLERY_PIPELINE, PROJECT_ROOT, QUERY_PIPELINE, SHARED_DATA, TINY_CLIP,
                   TRAIN_PIPELINE, cirr_as_triplets, make_standin_circo, make_tiny_cirr,
                   make_tiny_fiq, shared_data, tiny_ssn_cfg, write_image,
                   write_standin_images, write_triplets)
from .browser import free_port
from .tools import dist_env, run_tool, run_with_deadline, tool, write_tiny_config

__all__ = [
    'GALLERY_PIPELINE', 'PROJECT_ROOT', 'QUERY_PIPELINE', 'SHARED_DATA', 'TINY_CLIP',
    'TRAIN_PIPELINE', 'cirr_as_triplets', 'write_triplets',
    'make_standin_circo', 'make_tiny_cirr', 'make_tiny_fiq', 'shared_data',
    'tiny_ssn_cfg', 'write_image', 'write_standin_images', 'dist_env', 'run_tool',
    'run_with_deadline', 'tool',
    'write_tiny_config', 'free_port'
]
