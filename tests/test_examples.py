"""The ``Examples:`` blocks of the public entry points run as written.

They use the paths a user has (``data/cirr_dataset``, ``configs/...``, ``work_dirs/...``); the
fixture lays those out in a temporary folder with tiny stand-ins and runs each block there.
"""
import doctest
import os
import os.path as osp

import pytest
import torch

from helpers import PROJECT_ROOT, make_tiny_cirr, make_tiny_fiq, write_image
from ssn_plugin.apis import CIRRetriever
from ssn_plugin.datasets import CIRR, FashionIQ
from ssn_plugin.evaluation import CIRRMetric, functional
from ssn_plugin.models import CLIPBaseline


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    make_tiny_cirr(str(tmp_path / 'data' / 'cirr_dataset'))
    make_tiny_fiq(str(tmp_path / 'data' / 'fashion-iq'))
    os.symlink(osp.join(PROJECT_ROOT, 'configs'), tmp_path / 'configs')
    for i, name in enumerate('abc'):
        write_image(str(tmp_path / 'my_photos' / f'{name}.png'), size=(64, 64), seed=i)
    monkeypatch.chdir(tmp_path)
    model = CIRRetriever('configs/demo/ssn_shapes.py', device='cpu').model
    os.makedirs('work_dirs/ssn_shapes')
    torch.save(dict(state_dict=model.state_dict(), meta={}),
               'work_dirs/ssn_shapes/epoch_12.pth')
    return tmp_path


@pytest.mark.parametrize('obj', [CIRR, FashionIQ, CIRRMetric, functional.cirr_recalls,
                                 functional.circo_metrics, CIRRetriever, CLIPBaseline],
                         ids=lambda o: o.__name__)
def test_examples_run(sandbox, obj):
    tests = doctest.DocTestFinder(recurse=False).find(obj, obj.__name__, globs={})
    examples = [t for t in tests if t.examples]
    assert examples, f'{obj.__name__} has no Examples block'
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in examples:
        runner.run(test)
    assert runner.failures == 0, f'{runner.failures} example lines of {obj.__name__} failed'
