"""Query latency of the web demo (tools/demo_app.py) on the shapes gallery, in a real browser.

Three figures from one run: the time to index the gallery; a query through the Python API
(``CIRRetriever.query``: encode the reference and the text, rank the gallery), the baseline;
and a query through the page in headless Chromium, from the click on Search to the new result
table (the API's work plus Gradio's round trip and the browser's rendering of the results).

    python benchmarks/bench_demo.py              # the trained demo, if work_dirs has it
    python benchmarks/bench_demo.py --checkpoint work_dirs/ssn_shapes/epoch_12.pth \
        --gallery data/shapes_demo/dev --queries 20

Needs the demo extra and Debian's chromium + chromium-driver.
"""
import argparse
import json
import os.path as osp
import platform
import statistics
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tests'))
from helpers.browser import DemoPage, chrome, demo_server, find_chromium  # noqa: E402

from ssn_plugin.apis import CIRRetriever  # noqa: E402

CONFIG = osp.join(ROOT, 'configs', 'demo', 'ssn_shapes.py')
PAGE_SIZE = 24


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', default=osp.join(ROOT, 'work_dirs', 'ssn_shapes',
                                                         'epoch_12.pth'))
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data', 'shapes_demo'))
    parser.add_argument('--queries', type=int, default=20)
    args = parser.parse_args()
    if find_chromium() is None:
        sys.exit('needs chromium and chromium-driver (apt-get install chromium chromium-driver)')
    checkpoint = args.checkpoint
    if not osp.isfile(checkpoint):
        sys.exit(f'{checkpoint} not found: train the demo first '
                 '(python tools/train.py configs/demo/ssn_shapes.py)')
    gallery = osp.join(args.data_root, 'dev')
    retriever = CIRRetriever(CONFIG, checkpoint, device='cpu')
    start = time.perf_counter()
    retriever.index(gallery, progress=False)
    index_s = time.perf_counter() - start
    # The val queries whose reference is on the page's first gallery page (clickable there),
    # cycled to --queries.
    first_page = set(retriever.names[:PAGE_SIZE])
    with open(osp.join(args.data_root, 'cirr', 'captions', 'cap.rc2.val.json')) as f:
        usable = [(r['reference'] + '.png', r['caption']) for r in json.load(f)
                  if r['reference'] + '.png' in first_page]
    queries = [usable[i % len(usable)] for i in range(args.queries)]
    api_ms = []
    for reference, caption in queries:
        start = time.perf_counter()
        retriever.query(retriever.path_of(reference), caption, topk=10)
        api_ms.append(1000 * (time.perf_counter() - start))

    page_ms = []
    with demo_server([CONFIG, checkpoint, '--gallery', gallery,
                      '--page-size', str(PAGE_SIZE)]) as (url, _):
        driver = chrome()
        try:
            page = DemoPage(driver, url, timeout=120)
            names = page.browser_names()
            for reference, caption in queries:
                page.pick_from_gallery(names.index(reference))
                page.type_text(caption)
                page_ms.append(1000 * page.search())
        finally:
            driver.quit()

    api, web = statistics.median(api_ms), statistics.median(page_ms)
    print(f'# {time.strftime("%Y-%m-%d")}, {platform.machine()}, '
          f'{torch.get_num_threads()} threads, torch {torch.__version__}, '
          f'{len(retriever.names)} gallery images, {len(queries)} queries '
          f'({len(usable)} distinct), top 10')
    print(f'index_build_s={index_s:.1f}')
    print(f'api_query_ms_median={api:.1f} (max {max(api_ms):.1f})')
    print(f'page_query_ms_median={web:.1f} (max {max(page_ms):.1f})')
    print(f'page_vs_api={web / api:.1f}')


if __name__ == '__main__':
    main()
