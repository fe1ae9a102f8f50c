"""The web demo: its logic in Python, and a whole search in a real (headless) Chromium.

The browser test runs on a random-initialised demo model over a small generated shapes
gallery. With SSN_DEMO_CHECKPOINT (a checkpoint of configs/demo/ssn_shapes.py), SSN_DEMO_ROOT
(its data root) and SSN_DEMO_SCREENSHOT set, the same test runs on the trained demo and writes
the screenshot shown in the README (docs/demo_app.png).
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

import pytest
import torch

from helpers.browser import DemoPage, chrome, demo_server, find_chromium
from helpers import PROJECT_ROOT, write_image
from ssn_plugin.apis import CIRRetriever
from ssn_plugin.apis.web_demo import DemoInputError, DemoSession, history_html
from ssn_plugin.datasets import generate_shapes_dataset

sys.path.insert(0, osp.join(PROJECT_ROOT, 'tools'))
import demo_app  # noqa: E402

CONFIG = osp.join(PROJECT_ROOT, 'configs', 'demo', 'ssn_shapes.py')


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """(config, checkpoint, data root, gallery folder): the trained demo when the environment
    names one, else a random-initialised demo model over 60 generated shapes images."""
    if os.environ.get('SSN_DEMO_CHECKPOINT'):
        root = os.environ['SSN_DEMO_ROOT']
        return CONFIG, os.environ['SSN_DEMO_CHECKPOINT'], root, osp.join(root, 'dev')
    tmp = tmp_path_factory.mktemp('demo')
    root = str(tmp / 'shapes')
    generate_shapes_dataset(root, num_train_sets=1, num_val_sets=10)
    torch.manual_seed(0)
    model = CIRRetriever(CONFIG, device='cpu').model
    checkpoint = str(tmp / 'random_demo.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), checkpoint)
    return CONFIG, checkpoint, root, osp.join(root, 'dev')


@pytest.fixture(scope='module')
def retriever(demo):
    config, checkpoint, _, gallery = demo
    return CIRRetriever(config, checkpoint, device='cpu').index(gallery, progress=False)


def first_query(root):
    """The first val query of the shapes data: (reference file name, caption)."""
    with open(osp.join(root, 'cirr', 'captions', 'cap.rc2.val.json')) as f:
        record = json.load(f)[0]
    return record['reference'] + '.png', record['caption']


def canonical(names, scores):
    """A ranking as the page prints it, with ties (equal to 4 decimals) in name order."""
    return sorted(zip([round(s, 4) for s in scores], names), key=lambda p: (-p[0], p[1]))


def assert_same_ranking(page, api_results):
    assert canonical(page.result_names(), page.result_scores()) == canonical(
        [n for n, _ in api_results], [s for _, s in api_results])


def page_parts(app):
    """The page's components by element id, and its events by (element id, event name)."""
    by_id = {b.elem_id: b for b in app.blocks.values() if getattr(b, 'elem_id', None)}
    events = {}
    for fn in app.fns.values():
        for target, event in fn.targets:
            events[(app.blocks[target].elem_id, event)] = fn
    return by_id, events


# ---------------------------------------------------------------------- logic, no browser
def test_session_pages_and_references(retriever):
    session = DemoSession(retriever, page_size=24)
    assert session.num_pages == -(-len(retriever.names) // 24)
    assert [name for _, name in session.page(0)] == retriever.names[:24]
    assert session.page(99) == session.page(session.num_pages - 1)  # clamped
    ref = session.gallery_reference(1, 0)
    assert ref.name == retriever.names[24] and ref.path == retriever.paths[24]
    with pytest.raises(DemoInputError, match='no gallery image at position 30'):
        session.gallery_reference(0, 30)
    # The edges of a page and of the results: the first is valid, one past the last is not.
    assert session.gallery_reference(0, 23).name == retriever.names[23]
    with pytest.raises(DemoInputError, match='no gallery image at position 24 of page 1'):
        session.gallery_reference(0, 24)
    steps = session.search(session.gallery_reference(0, 0), 'make it blue', 3, [])
    assert session.result_reference(steps, 0).name == steps[0].results[0][0]
    for index in (3, -1):
        with pytest.raises(DemoInputError, match='no result at that position'):
            session.result_reference(steps, index)
    with pytest.raises(DemoInputError, match='no result at that position; search first'):
        session.result_reference([], 0)


def test_session_search_refine_and_history(retriever):
    session = DemoSession(retriever)
    ref = session.gallery_reference(0, 2)
    steps = session.search(ref, '  make it blue ', 5, [])
    assert steps[0].results == retriever.query(ref.path, 'make it blue', topk=5)
    assert ref.name not in [n for n, _ in steps[0].results]  # the reference is left out
    nxt = session.result_reference(steps, 1)
    assert nxt.name == steps[0].results[1][0]
    steps = session.search(nxt, 'remove the square', 5, steps)
    assert [s.text for s in steps] == ['make it blue', 'remove the square']
    assert history_html(steps).count('<li>') == 2
    # A step's time is the query's own, measured around it.
    start = time.perf_counter()
    timed = session.search(nxt, 'make it blue', 5, [])[0].seconds
    assert 0 < timed <= time.perf_counter() - start
    for empty in (None, '', ' \t'):
        with pytest.raises(DemoInputError, match='type how the image you look for differs'):
            session.search(nxt, empty, 5, steps)
    assert session.result_items(steps)[0][1].startswith(f'1. {steps[1].results[0][0]} (')


def test_the_results_table_and_the_message_written_out():
    """The HTML the page shows (and the browser test reads), written out: ranks from 1, one
    row per result, names and texts escaped; errors in red, notices in green, no text an
    empty box."""
    from ssn_plugin.apis.web_demo import Step, message_html, results_html
    assert results_html([]) == '<p>No search yet.</p>'
    old = Step('old.png', 'older', [('z.png', 0.5)], 0.1)
    step = Step('ref.png', 'make it <red>', [('a&b.png', 0.98765), ('c.png', -0.5)], 0.0123)
    assert results_html([old, step]) == (
        '<p>2 results for <b>ref.png</b> + "make it &lt;red&gt;" in 12 ms</p>'
        '<table id="ssn-results-table"><tr><th>rank</th><th>image</th><th>cosine</th></tr>'
        '<tr><td>1</td><td class="ssn-name">a&amp;b.png</td><td>0.9877</td></tr>'
        '<tr><td>2</td><td class="ssn-name">c.png</td><td>-0.5000</td></tr></table>')
    assert history_html([]) == '<p>The steps of your search appear here.</p>'
    assert history_html([old, step, Step('up.png', 'x', [], 0.2)]) == (
        '<ol id="ssn-history"><li>old.png + "older" &rarr; z.png</li>'
        '<li>ref.png + "make it &lt;red&gt;" &rarr; a&amp;b.png</li>'
        '<li>up.png + "x" &rarr; nothing</li></ol>')
    assert message_html() == message_html('') == '<div id="ssn-message"></div>'
    assert message_html('bad <file>') == (
        '<div id="ssn-message" style="color:#b00020;font-weight:600">bad &lt;file&gt;</div>')
    assert message_html('2 files skipped', error=False) == (
        '<div id="ssn-message" style="color:#1b5e20;font-weight:600">2 files skipped</div>')


def test_the_page_opens_with_the_sessions_notice_and_empty_states(retriever):
    """A session's notice (as a notice) or error (as an error) is the message the page opens
    with; the page's states start with no reference, no history and page 0."""
    import gradio as gr
    from ssn_plugin.apis.web_demo import build_app, message_html
    for session, shown in ((DemoSession(retriever, notice='1 gallery files could not be read'),
                            message_html('1 gallery files could not be read', error=False)),
                           (DemoSession(None, error='no images found in /x'),
                            message_html('no images found in /x'))):
        app = build_app(session)
        by_id, _ = page_parts(app)
        assert by_id['ssn-message-box'].value == shown
        assert by_id['ssn-results-box'].value == '<p>No search yet.</p>'
        assert by_id['ssn-history-box'].value == '<p>The steps of your search appear here.</p>'
        # The default title, in the browser's tab and as the page's heading.
        assert app.title == 'ssn_plugin: composed image retrieval'
        assert [b.value for b in app.blocks.values() if isinstance(b, gr.Markdown)][0] \
            .startswith('## ssn_plugin: composed image retrieval\n')
    states = [b.value for b in app.blocks.values() if isinstance(b, gr.State)]
    assert sorted(map(repr, states)) == ['0', 'None', '[]']


def test_the_pages_controls_as_a_user_meets_them(retriever):
    """The page's controls, written out: what each says, what it takes (the upload hands the
    handler a file path, the reference view is not editable, results between 1 and 50, 10 at
    first), galleries whose clicks select instead of opening a preview, and the two columns
    (controls 1 : results 2)."""
    import gradio as gr
    from ssn_plugin.apis.web_demo import build_app
    shown = {gr.Column: ('scale', ), gr.Image: ('label', 'type', 'interactive', 'height'),
             gr.File: ('label', 'type'), gr.Textbox: ('label', 'placeholder'),
             gr.Slider: ('label', 'minimum', 'maximum', 'value', 'step'),
             gr.Button: ('value', 'variant'),
             gr.Gallery: ('label', 'columns', 'height', 'allow_preview')}
    app = build_app(DemoSession(retriever, page_size=8), title='test page')
    seen = [(b.elem_id, *(getattr(b, key) for key in shown[type(b)]))
            for b in app.blocks.values() if type(b) in shown]
    assert seen == [
        (None, 1),
        ('ssn-reference', 'Reference', 'pil', False, 240),
        ('ssn-upload', 'Upload a reference image', 'filepath'),
        ('ssn-text', 'How should the result differ from the reference?',
         'e.g. make the red circle blue'),
        (None, 'Results', 1, 50, 10, 1),
        ('ssn-search', 'Search', 'primary'),
        (None, 2),
        ('ssn-results', 'Results (click one to refine from it)', 5, 'auto', False),
        ('ssn-prev', 'Previous page', 'secondary'),
        ('ssn-next', 'Next page', 'secondary'),
        ('ssn-browser', 'Gallery (click an image to make it the reference)', 8, 'auto', False),
    ]


def test_the_pages_events_at_their_edges_and_on_bad_input(retriever):
    """Every reference event shows its reference in the same four places; a click that
    names nothing, or Enter with no text, becomes the message and changes nothing else; the
    page buttons move one page and stop at the ends, on a one-page gallery and on a page
    with no gallery too."""
    import gradio as gr
    from ssn_plugin.apis.web_demo import build_app, message_html
    _, events = page_parts(build_app(DemoSession(retriever, page_size=8)))

    def out_ids(key):
        return [getattr(c, 'elem_id', None) for c in events[key].outputs]

    for key in (('ssn-browser', 'select'), ('ssn-results', 'select'), ('ssn-upload', 'upload')):
        assert out_ids(key) == [None, 'ssn-reference', 'ssn-reference-name', 'ssn-message-box']
    for key in (('ssn-prev', 'click'), ('ssn-next', 'click')):
        assert out_ids(key) == [None, 'ssn-browser', 'ssn-page']
    nowhere = gr.SelectData(None, dict(index=8, value=None))
    assert events[('ssn-browser', 'select')].fn(0, nowhere) == (gr.update(), ) * 3 + (
        message_html('no gallery image at position 8 of page 1'), )
    assert events[('ssn-results', 'select')].fn([], nowhere) == (gr.update(), ) * 3 + (
        message_html('no result at that position; search first'), )
    ref = DemoSession(retriever).gallery_reference(0, 0)
    out = events[('ssn-text', 'submit')].fn(ref, '', 5, [])
    assert out[:4] == (gr.update(), ) * 4 and 'type how the image' in out[4]
    number, items, label = events[('ssn-prev', 'click')].fn(2)
    assert number == 1 and label == f'Page 2 of {-(-len(retriever.names) // 8)}'
    assert [caption for _, caption in items] == retriever.names[8:16]
    _, events = page_parts(build_app(DemoSession(retriever, page_size=1000)))
    number, items, label = events[('ssn-next', 'click')].fn(0)
    assert (number, label, len(items)) == (0, 'Page 1 of 1', len(retriever.names))
    by_id, events = page_parts(build_app(DemoSession(None, error='no images found in /x')))
    assert by_id['ssn-page'].value == 'No gallery' and by_id['ssn-browser'].value == []
    assert events[('ssn-next', 'click')].fn(0) == (0, [], 'No gallery')


def test_session_input_errors(retriever, tmp_path):
    session = DemoSession(retriever)
    ref = session.gallery_reference(0, 0)
    with pytest.raises(DemoInputError, match='choose a reference image first'):
        session.search(None, 'make it red', 5, [])
    with pytest.raises(DemoInputError, match='type how the image'):
        session.search(ref, '   ', 5, [])
    with pytest.raises(DemoInputError, match='search first'):
        session.result_reference([], 0)
    fake = tmp_path / 'holiday.png'
    fake.write_text('not an image at all')
    with pytest.raises(DemoInputError, match='holiday.png is not an image that can be read'):
        session.uploaded_reference(str(fake))
    truncated = tmp_path / 'cut.png'
    write_image(str(tmp_path / 'whole.png'), size=(64, 64))
    truncated.write_bytes((tmp_path / 'whole.png').read_bytes()[:200])
    with pytest.raises(DemoInputError, match='cut.png is not an image'):
        session.uploaded_reference(str(truncated))


def test_bad_galleries_become_the_page_message(demo, tmp_path):
    config, checkpoint, _, gallery = demo
    (tmp_path / 'empty').mkdir()
    args = argparse.Namespace(config=config, checkpoint=checkpoint, index=None,
                              gallery=str(tmp_path / 'empty'), save_index=None, device='cpu',
                              batch_size=8, page_size=24)
    session = demo_app.make_session(args)
    assert session.retriever is None and 'no images found' in session.error
    with pytest.raises(DemoInputError, match='no images found'):
        session.page(0)
    # An index built by other weights is refused, as the API does.
    torch.manual_seed(1)
    other = CIRRetriever(config, device='cpu').index(gallery, progress=False)
    other.save_index(str(tmp_path / 'other.idx'))
    args.gallery, args.index = None, str(tmp_path / 'other.idx')
    session = demo_app.make_session(args)
    assert 'was built by a different model' in session.error


# ---------------------------------------------------------------------- the browser
@pytest.mark.slow
def test_a_whole_search_in_chromium(demo, retriever, tmp_path):
    if find_chromium() is None:
        pytest.skip('Chromium and chromium-driver are not installed (Debian: apt-get install '
                    'chromium chromium-driver, which .ci/run does as root)')
    config, checkpoint, root, gallery = demo
    screenshot = os.environ.get('SSN_DEMO_SCREENSHOT', str(tmp_path / 'demo_app.png'))
    reference, caption = first_query(root)
    with demo_server([config, checkpoint, '--gallery', gallery]) as (url, server):
        driver = chrome()
        try:
            page = DemoPage(driver, url)
            assert page.message() == ''
            # A bad input first: searching without a text says what to do.
            page.pick_from_gallery(page.browser_names().index(reference))
            page.type_text('')
            assert 'type how the image you look for differs' in page.search_expecting_message()

            # Pick, type, search: the names shown are the API's top-k for the same query.
            page.type_text(caption)
            page.search()
            assert page.message() == ''
            first = retriever.query(retriever.path_of(reference), caption, topk=10)
            assert_same_ranking(page, first)

            # Click a result to refine from it.
            refined = page.pick_result(0)
            follow_up = 'make the yellow triangle blue'
            page.type_text(follow_up)
            page.search()
            second = retriever.query(retriever.path_of(refined), follow_up, topk=10)
            assert_same_ranking(page, second)
            assert page.history() == [
                f'{reference} + "{caption}" → {first[0][0]}',
                f'{refined} + "{follow_up}" → {second[0][0]}']

            driver.save_screenshot(screenshot)

            # An upload that is not an image gets a message, not a stack trace.
            fake = tmp_path / 'notes.png'
            fake.write_text('this is text, not a picture')
            page.upload(str(fake))
            page.wait.until(lambda d: page.message())
            assert 'notes.png is not an image that can be read' in page.message()
            assert 'Traceback' not in driver.page_source
        finally:
            driver.quit()
    assert server.returncode is not None  # shut down
    with open(screenshot, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_session_searches_from_an_upload(retriever, tmp_path):
    """An uploaded copy of a gallery image is not a gallery file: nothing is left out."""
    session = DemoSession(retriever)
    upload = tmp_path / 'mine.png'
    upload.write_bytes(open(retriever.paths[0], 'rb').read())
    ref = session.uploaded_reference(str(upload))
    assert ref.name is None
    steps = session.search(ref, 'make it blue', len(retriever.names), [])
    assert steps[0].reference == 'upload mine.png'
    assert sorted(n for n, _ in steps[0].results) == sorted(retriever.names)
    assert steps[0].results == retriever.query(str(upload), 'make it blue',
                                               topk=len(retriever.names))


# ---------------------------------------------------------------------- hostile input (issue 24)
def hostile_gallery(demo, tmp_path):
    """A copy of the demo gallery with private files next to and below its images, and one
    truncated PNG."""
    gallery = tmp_path / 'gallery'
    os.makedirs(gallery / 'private')
    for name in sorted(os.listdir(demo[3]))[:12]:
        (gallery / name).write_bytes(open(osp.join(demo[3], name), 'rb').read())
    secrets = {'notes.txt': 'notes', '.env': 'TOKEN=secret', 'private/diary.txt': 'dear diary'}
    for name, text in secrets.items():
        (gallery / name).write_text(text)
    good = (gallery / sorted(os.listdir(demo[3]))[0]).read_bytes()
    (gallery / 'truncated.png').write_bytes(good[:len(good) // 2])
    return gallery, secrets


def http_status(url: str) -> int:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.slow
def test_the_page_serves_no_file_of_the_gallery_folders(demo, tmp_path):
    """GET /gradio_api/file=<path> for the private files next to the images, below them, and
    the image files themselves: none is served (the page shows thumbnails it makes)."""
    config, checkpoint, _, _ = demo
    gallery, secrets = hostile_gallery(demo, tmp_path)
    image = sorted(p for p in os.listdir(gallery) if p.endswith('.png'))[0]
    with demo_server([config, checkpoint, '--gallery', str(gallery), '--device', 'cpu']) as (
            url, _):
        assert http_status(url) == 200  # the page itself
        for name in [*secrets, image]:
            assert http_status(f'{url}gradio_api/file={gallery / name}') in (403, 404), name


def test_a_gallery_with_a_truncated_file_opens_with_it_listed(demo, tmp_path):
    config, checkpoint, _, _ = demo
    gallery, _ = hostile_gallery(demo, tmp_path)
    args = argparse.Namespace(config=config, checkpoint=checkpoint, index=None,
                              gallery=str(gallery), save_index=None, device='cpu',
                              batch_size=8, page_size=24)
    session = demo_app.make_session(args)
    assert session.retriever is not None and len(session.retriever.names) == 12
    assert session.notice.startswith('1 gallery files could not be read') and \
        'truncated.png' in session.notice


def test_an_index_naming_files_outside_its_gallery_is_refused(demo, retriever, tmp_path):
    """The weights digest is computable by anyone with the checkpoint: a crafted index with
    other paths is refused by what its paths are, not by its digest."""
    path = str(tmp_path / 'crafted.idx')
    retriever.save_index(path)
    content = torch.load(path, weights_only=False)
    content['paths'] = ['/etc/passwd', demo[1]] + content['paths'][2:]
    torch.save(content, path)
    with pytest.raises(ValueError, match=r"does not match the files it indexes \(2 of [\s\S]*"
                                         r"'/etc/passwd': not an image file name"):
        CIRRetriever(demo[0], demo[1], device='cpu').load_index(path)


def test_an_index_notices_files_replaced_or_deleted_since(demo, tmp_path):
    gallery, _ = hostile_gallery(demo, tmp_path)
    os.remove(gallery / 'truncated.png')
    retriever = CIRRetriever(demo[0], demo[1], device='cpu').index(str(gallery), progress=False)
    path = str(tmp_path / 'gallery.idx')
    retriever.save_index(path)
    first, second = retriever.paths[:2]
    os.remove(first)
    write_image(second, size=(64, 64), seed=99)  # replaced
    with pytest.raises(ValueError, match=f'{first}: deleted[\\s\\S]*{second}: changed'):
        CIRRetriever(demo[0], demo[1], device='cpu').load_index(path)


def test_uploads_of_any_size_and_orientation_search_on_the_quick_start_config(retriever,
                                                                              tmp_path):
    from PIL import Image
    session = DemoSession(retriever)
    photo = Image.new('RGB', (300, 200), (200, 30, 30))
    exif = photo.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees to show
    photo.save(tmp_path / 'phone.jpg', exif=exif)
    reference = session.uploaded_reference(str(tmp_path / 'phone.jpg'))
    history = session.search(reference, 'make it blue', 5, [])
    assert len(history[-1].results) == 5


def test_a_decompression_bomb_upload_gets_the_pages_message(retriever, tmp_path):
    from PIL import Image
    Image.new('1', (9000, 9000)).save(tmp_path / 'bomb.png')  # 81 megapixels, 10 kB
    Image.new('RGB', (1, 20000)).save(tmp_path / 'strip.png')
    session = DemoSession(retriever)
    with pytest.raises(DemoInputError, match='bomb.png is too large to search with: .*'
                                             '81,000,000 pixels'):
        session.uploaded_reference(str(tmp_path / 'bomb.png'))
    with pytest.raises(DemoInputError, match='strip.png is too large .*aspect ratio'):
        session.uploaded_reference(str(tmp_path / 'strip.png'))


def test_the_pages_events_in_process(retriever, tmp_path):
    """The Gradio page's wiring without a browser: every event the browser test drives
    (gallery and result clicks, upload, Search and Enter, the page buttons) is bound to the
    element ids the browser helper uses, reads the right inputs and returns what the page
    shows; a bad input becomes the message and leaves the rest as it was."""
    import gradio as gr
    from PIL import Image
    from ssn_plugin.apis.web_demo import Reference, build_app, message_html
    session = DemoSession(retriever, page_size=8)
    app = build_app(session, title='test page')
    by_id, events = page_parts(app)
    assert sorted(events) == [('ssn-browser', 'select'), ('ssn-next', 'click'),
                              ('ssn-prev', 'click'), ('ssn-results', 'select'),
                              ('ssn-search', 'click'), ('ssn-text', 'submit'),
                              ('ssn-upload', 'upload')]
    names, pages = retriever.names, -(-len(retriever.names) // 8)
    # What the page shows when it opens.
    assert by_id['ssn-page'].value == f'Page 1 of {pages}'
    assert [item['caption'] for item in by_id['ssn-browser'].value] == names[:8]
    assert by_id['ssn-message-box'].value == message_html('')
    assert by_id['ssn-reference-name'].value == 'No reference chosen yet.'
    status = f'{len(names)} images indexed; model weights digest {retriever.model_digest[:12]}'
    assert any(status in str(getattr(b, 'value', '')) for b in app.blocks.values())

    def call(key, *args):
        fn = events[key]
        assert len(args) == len(fn.inputs) + (key[1] == 'select')
        return fn.fn(*args)

    reference_outputs = ['ssn-reference', 'ssn-reference-name', 'ssn-message-box']
    assert [getattr(c, 'elem_id', None) for c in events[('ssn-browser', 'select')].outputs][1:] \
        == reference_outputs
    # A click on the third image of page 2 of the gallery.
    ref, image, label, message = call(('ssn-browser', 'select'), 1,
                                      gr.SelectData(None, dict(index=2, value=None)))
    assert ref == Reference(retriever.path_of(names[10]), names[10])
    assert isinstance(image, Image.Image) and label == f'Reference: **{names[10]}**'
    assert message == message_html()
    # Search, then Enter in the text box: the API's top 5, shown in the four outputs.
    search_outputs = ['ssn-results', 'ssn-results-box', 'ssn-history-box', 'ssn-message-box']
    for key in (('ssn-search', 'click'), ('ssn-text', 'submit')):
        fn = events[key]
        assert [c.elem_id for c in fn.inputs][1] == 'ssn-text'
        assert [getattr(c, 'elem_id', None) for c in fn.outputs][1:] == search_outputs
    steps, shown, table, history, message = call(('ssn-search', 'click'), ref, 'make it blue',
                                                 5, [])
    expected = retriever.query(ref.path, 'make it blue', topk=5)
    assert steps[-1].results == expected and message == message_html()
    assert [caption for _, caption in shown] == [
        f'{rank}. {name} ({score:.3f})' for rank, (name, score) in enumerate(expected, 1)]
    assert table.count('class="ssn-name"') == 5 and history.count('<li>') == 1
    again = call(('ssn-text', 'submit'), ref, 'make it blue', 5, steps)
    assert len(again[0]) == 2 and again[0][-1].results == expected
    # A click on the second result makes it the reference.
    ref2, _, label, _ = call(('ssn-results', 'select'), steps,
                             gr.SelectData(None, dict(index=1, value=None)))
    assert ref2.name == expected[1][0] and label == f'Reference: **{expected[1][0]}**'
    # An upload becomes the reference; one that is not an image becomes the message.
    photo = tmp_path / 'holiday.png'
    write_image(str(photo), size=(90, 50))
    ref3, _, label, _ = call(('ssn-upload', 'upload'), str(photo))
    assert ref3 == Reference(str(photo), None) and label == 'Reference: **uploaded holiday.png**'
    fake = tmp_path / 'notes.png'
    fake.write_text('not a picture')
    out = call(('ssn-upload', 'upload'), str(fake))
    assert out[:3] == (gr.update(), ) * 3
    assert 'notes.png is not an image that can be read' in out[3]
    out = call(('ssn-search', 'click'), ref, '   ', 5, steps)
    assert out[:4] == (gr.update(), ) * 4 and 'type how the image' in out[4]
    # The page buttons: forward, back, and clamped at both ends.
    for key, start, page in ((('ssn-next', 'click'), 0, 1), (('ssn-prev', 'click'), 1, 0),
                             (('ssn-prev', 'click'), 0, 0),
                             (('ssn-next', 'click'), pages - 1, pages - 1)):
        number, items, text = call(key, start)
        assert number == page and text == f'Page {page + 1} of {pages}'
        assert [caption for _, caption in items] == names[8 * page:8 * page + 8]
