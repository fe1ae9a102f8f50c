"""Give the pipelines the model's input resolution and open the image caches."""
from mmengine.hooks import Hook
from mmengine.logging import print_log

from ssn_plugin.registry import HOOKS
from ..utils import unwrap_model


@HOOKS.register_module()
class ImageSizeFromModelHook(Hook):
    """Give the pipelines the model's input resolution before each train / val / test run.

    Resize transforms whose ``size`` is unset (``CLIPResizeCrop()``, as in the recipes) get
    ``model.image_size``, in the loop's dataset pipeline and in its gallery pipeline, so one
    config serves a 224 px and a 336 px model without pipeline edits. Explicit sizes are kept.
    It runs before the loop iterates its data loader, so worker processes see the filled-in
    transforms, and (priority ``ABOVE_NORMAL``) before :class:`GalleryFeatureHook` builds the
    gallery.

    Then, as the cached pixels depend on that size, it prepares the dataset's image caches
    (``image_cache`` of the CIR datasets): it opens them, building a missing one first when
    ``build_caches`` (on the main process, the others wait), and stops on a stale one. Both
    steps are :meth:`~ssn_plugin.datasets.BaseCIRDataset.prepare_for_model`, which the
    retriever and ``tools/build_image_cache.py`` call too.

    Args:
        build_caches (bool): Build a missing image cache on first use. False: a missing cache
            is an error that says how to build it. Defaults to True.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, build_caches: bool = True):
        self.build_caches = build_caches

    def _fill(self, runner, loop, name: str) -> None:
        size = getattr(unwrap_model(runner.model), 'image_size', None)
        dataset = loop.dataloader.dataset
        if size is None or not hasattr(dataset, 'prepare_for_model'):
            return  # only CIR datasets (BaseCIRDataset) hold resize steps and image caches
        filled, cached = dataset.prepare_for_model(size, build_caches=self.build_caches)
        if filled:
            print_log(f'{name} pipelines: image size {tuple(size)} taken from the model',
                      logger='current')
        if cached:
            print_log(f'{name} pipelines read preprocessed images from {dataset.image_cache}',
                      logger='current')

    def before_train(self, runner) -> None:
        self._fill(runner, runner.train_loop, 'train')

    def before_val(self, runner) -> None:
        self._fill(runner, runner.val_loop, 'val')

    def before_test(self, runner) -> None:
        self._fill(runner, runner.test_loop, 'test')
