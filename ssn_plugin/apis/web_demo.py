"""A web page to search a gallery with a reference image and words (``tools/demo_app.py``).

:class:`DemoSession` holds what the page does, in plain Python (tested without a browser):
browse the gallery in pages, choose or upload a reference, search, refine from a result, keep the
history of steps. :func:`build_app` lays it out as a Gradio app; Gradio is an optional extra
(``pip install -e ".[demo]"``) and is imported only there.

Every input error becomes a :class:`DemoInputError` whose message the page shows; nothing the
user does shows a stack trace.
"""
import functools
import html
import os.path as osp
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Tuple, Union

from PIL import Image

from ssn_plugin.image_io import ImageTooLarge, read_image

if TYPE_CHECKING:  # the page serves an ONNX export without torch: no import at run time
    from .onnx_retriever import OnnxRetriever
    from .retriever import CIRRetriever


class DemoInputError(ValueError):
    """Bad input from the page (or the gallery it was started with): shown to the user."""


class Reference(NamedTuple):
    """The current reference: a gallery image (``name`` set) or an upload (``name`` None)."""
    path: str
    name: Optional[str]


class Step(NamedTuple):
    """One search: its reference, text and results ``[(name, score), ...]``."""
    reference: str
    text: str
    results: List[Tuple[str, float]]
    seconds: float


class DemoSession:
    """The state and actions of the demo page over one indexed retriever.

    Args:
        retriever (CIRRetriever | OnnxRetriever | None): A retriever with an index (PyTorch or
            ONNX Runtime: the page needs only what both have); None when the gallery could
            not be indexed, then ``error`` says why and every action repeats it.
        page_size (int): Gallery images per page of the browser. Defaults to 24.
        error (str, optional): Why there is no index. Defaults to None.
        notice (str, optional): What the page says when it opens (e.g. the gallery files
            that could not be read and were left out). Defaults to None.
    """

    def __init__(self, retriever: Optional[Union['CIRRetriever', 'OnnxRetriever']],
                 page_size: int = 24,
                 error: Optional[str] = None, notice: Optional[str] = None):
        self.retriever = retriever
        self.page_size = page_size
        self.error = error
        self.notice = notice
        if retriever is None and error is None:
            raise ValueError('DemoSession needs a retriever or the error that prevented one')

    # ------------------------------------------------------------------ gallery
    def _require(self) -> Union['CIRRetriever', 'OnnxRetriever']:
        if self.retriever is None:
            raise DemoInputError(self.error)
        return self.retriever

    @property
    def num_pages(self) -> int:
        if self.retriever is None:
            return 0
        return max(1, -(-len(self.retriever.names) // self.page_size))

    def page(self, number: int) -> List[Tuple[str, str]]:
        """``(path, name)`` of the images on page ``number`` (0-based, clamped)."""
        retriever = self._require()
        number = min(max(number, 0), self.num_pages - 1)
        start = number * self.page_size
        names = retriever.names[start:start + self.page_size]
        return [(retriever.paths[start + i], name) for i, name in enumerate(names)]

    def gallery_reference(self, page: int, index: int) -> Reference:
        """The reference chosen by clicking item ``index`` of browser page ``page``."""
        items = self.page(page)
        if not 0 <= index < len(items):
            raise DemoInputError(f'no gallery image at position {index} of page {page + 1}')
        path, name = items[index]
        return Reference(path, name)

    def result_reference(self, history: List[Step], index: int) -> Reference:
        """The reference chosen by clicking result ``index`` of the latest search."""
        if not history or not 0 <= index < len(history[-1].results):
            raise DemoInputError('no result at that position; search first')
        name = history[-1].results[index][0]
        return Reference(self._require().path_of(name), name)

    @staticmethod
    def uploaded_reference(path: Optional[str]) -> Reference:
        """Check an uploaded file: it must be an image PIL can decode completely."""
        if not path:
            raise DemoInputError('the upload is empty; choose an image file')
        try:
            read_image(path)  # the loader of every other path: bounds, EXIF, bit depths
        except ImageTooLarge as err:
            raise DemoInputError(f'{osp.basename(path)} is too large to search with: '
                                 f'{str(err).split(": ", 1)[-1]}') from err
        except (OSError, ValueError) as err:
            raise DemoInputError(f'{osp.basename(path)} is not an image that can be read '
                                 f'({str(err).split(": ", 1)[-1]}); upload a PNG, JPEG or WebP '
                                 'file') from err
        return Reference(path, None)

    # ------------------------------------------------------------------ search
    def search(self, reference: Optional[Reference], text: Optional[str], topk: int,
               history: List[Step]) -> List[Step]:
        """Run a query and return the history with the new step appended.

        The reference goes to the retriever as a file path: a gallery image is then left out
        of its own results, exactly as :meth:`CIRRetriever.query` does.
        """
        retriever = self._require()
        if reference is None:
            raise DemoInputError('choose a reference image first: click one in the gallery '
                                 'below or upload one')
        text = (text or '').strip()
        if not text:
            raise DemoInputError('type how the image you look for differs from the '
                                 'reference, e.g. "make the red circle blue"')
        start = time.perf_counter()
        results = retriever.query(reference.path, text, topk=int(topk))
        seconds = time.perf_counter() - start
        label = reference.name or f'upload {osp.basename(reference.path)}'
        return list(history) + [Step(label, text, results, seconds)]

    def result_items(self, history: List[Step]) -> List[Tuple[str, str]]:
        """``(path, caption)`` of the latest results, captions ``"rank. name (score)"``."""
        if not history:
            return []
        retriever = self._require()
        return [(retriever.path_of(name), f'{rank}. {name} ({score:.3f})')
                for rank, (name, score) in enumerate(history[-1].results, 1)]


def results_html(history: List[Step]) -> str:
    """The latest results as a table (rank, name, cosine score): names to copy, and what the
    browser test reads."""
    if not history:
        return '<p>No search yet.</p>'
    step = history[-1]
    rows = ''.join(f'<tr><td>{rank}</td><td class="ssn-name">{html.escape(name)}</td>'
                   f'<td>{score:.4f}</td></tr>'
                   for rank, (name, score) in enumerate(step.results, 1))
    return (f'<p>{len(step.results)} results for <b>{html.escape(step.reference)}</b> + '
            f'"{html.escape(step.text)}" in {1000 * step.seconds:.0f} ms</p>'
            f'<table id="ssn-results-table"><tr><th>rank</th><th>image</th><th>cosine</th></tr>'
            f'{rows}</table>')


def history_html(history: List[Step]) -> str:
    """Every step so far: reference -> text -> top result."""
    if not history:
        return '<p>The steps of your search appear here.</p>'
    items = ''.join(
        f'<li>{html.escape(step.reference)} + "{html.escape(step.text)}" &rarr; '
        f'{html.escape(step.results[0][0]) if step.results else "nothing"}</li>'
        for step in history)
    return f'<ol id="ssn-history">{items}</ol>'


def message_html(text: str = '', error: bool = True) -> str:
    """The page's message box: an error in red, a notice (``error=False``) in green."""
    if not text:
        return '<div id="ssn-message"></div>'
    colour = '#b00020' if error else '#1b5e20'
    return (f'<div id="ssn-message" style="color:{colour};font-weight:600">'
            f'{html.escape(text)}</div>')


#: The longest side of the images the page shows; the files themselves are never served.
THUMBNAIL_SIZE = 320


@functools.lru_cache(maxsize=512)  # at most about 150 MB of 320 px thumbnails
def thumbnail(path: str) -> Image.Image:
    """The image the page shows for a file: decoded by the project's loader and shrunk, so
    the page serves pictures, never the files or their folders."""
    image = read_image(path)
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    return image


def _shown(items: List[Tuple[str, str]]) -> List[Tuple[Image.Image, str]]:
    return [(thumbnail(path), caption) for path, caption in items]


def _import_gradio():
    try:
        import gradio as gr
    except ImportError as err:
        raise ImportError('the web demo needs Gradio: pip install -e ".[demo]"') from err
    return gr


def _guarded(gr, action, n_outputs: int):
    """Run an action whose last output is the message box; a DemoInputError becomes the
    message and leaves the other outputs as they are."""
    @functools.wraps(action)  # Gradio reads the signature and annotations (SelectData)
    def run(*args, **kwargs):
        try:
            return action(*args, **kwargs)
        except DemoInputError as err:
            return (gr.update(), ) * (n_outputs - 1) + (message_html(str(err)), )
    return run


def _page_label(session: DemoSession, number: int) -> str:
    return f'Page {number + 1} of {session.num_pages}' if session.retriever else 'No gallery'


def _status(session: DemoSession) -> str:
    if session.retriever is None:
        return f'No gallery: {session.error}'
    return (f'{len(session.retriever.names)} images indexed; model weights digest '
            f'{session.retriever.model_digest[:12]}')


def _layout(gr, session: DemoSession, title: str) -> SimpleNamespace:
    """The page's components (inside an open ``gr.Blocks``), by name."""
    gr.Markdown(f'## {title}\nPick a reference image (click one in the gallery or upload '
                'one), say how the image you want differs from it, search, and click a '
                f'result to refine from there.\n\n*{_status(session)}*')
    view = SimpleNamespace(reference=gr.State(None), history=gr.State([]), page=gr.State(0))
    view.message = gr.HTML(message_html(session.error) if session.error else
                           message_html(session.notice or '', error=False),
                           elem_id='ssn-message-box')
    with gr.Row():
        with gr.Column(scale=1):
            view.ref_view = gr.Image(label='Reference', type='pil', interactive=False,
                                     elem_id='ssn-reference', height=240)
            view.ref_label = gr.Markdown('No reference chosen yet.',
                                         elem_id='ssn-reference-name')
            view.upload = gr.File(label='Upload a reference image', type='filepath',
                                  elem_id='ssn-upload')
            view.text = gr.Textbox(label='How should the result differ from the reference?',
                                   placeholder='e.g. make the red circle blue',
                                   elem_id='ssn-text')
            view.topk = gr.Slider(1, 50, value=10, step=1, label='Results')
            view.search = gr.Button('Search', variant='primary', elem_id='ssn-search')
        with gr.Column(scale=2):
            view.results = gr.Gallery(label='Results (click one to refine from it)', columns=5,
                                      height='auto', allow_preview=False, elem_id='ssn-results')
            view.table = gr.HTML(results_html([]), elem_id='ssn-results-box')
            view.steps = gr.HTML(history_html([]), elem_id='ssn-history-box')
    with gr.Row():
        view.prev_page = gr.Button('Previous page', elem_id='ssn-prev')
        view.page_label = gr.Markdown(_page_label(session, 0), elem_id='ssn-page')
        view.next_page = gr.Button('Next page', elem_id='ssn-next')
    view.browser = gr.Gallery(value=_shown(session.page(0)) if session.retriever else [],
                              label='Gallery (click an image to make it the reference)',
                              columns=8, height='auto', allow_preview=False,
                              elem_id='ssn-browser')
    return view


def _wire_references(gr, session: DemoSession, view: SimpleNamespace) -> None:
    """A click in the gallery or the results, or an upload, sets the reference."""
    def show_reference(ref: Reference):
        name = ref.name or f'uploaded {osp.basename(ref.path)}'
        return ref, thumbnail(ref.path), f'Reference: **{name}**', message_html()

    def choose_from_gallery(number, evt: gr.SelectData):
        return show_reference(session.gallery_reference(number, evt.index))

    def choose_from_results(steps_so_far, evt: gr.SelectData):
        return show_reference(session.result_reference(steps_so_far, evt.index))

    def choose_upload(path):
        return show_reference(session.uploaded_reference(path))

    outputs = [view.reference, view.ref_view, view.ref_label, view.message]
    view.browser.select(_guarded(gr, choose_from_gallery, 4), [view.page], outputs)
    view.results.select(_guarded(gr, choose_from_results, 4), [view.history], outputs)
    view.upload.upload(_guarded(gr, choose_upload, 4), [view.upload], outputs)


def _wire_search(gr, session: DemoSession, view: SimpleNamespace) -> None:
    """The Search button and Enter in the text box run a search and show its results."""
    def run_search(ref, words, k, steps_so_far):
        new = session.search(ref, words, k, steps_so_far)
        return (new, _shown(session.result_items(new)), results_html(new), history_html(new),
                message_html())

    inputs = [view.reference, view.text, view.topk, view.history]
    outputs = [view.history, view.results, view.table, view.steps, view.message]
    view.search.click(_guarded(gr, run_search, 5), inputs, outputs)
    view.text.submit(_guarded(gr, run_search, 5), inputs, outputs)


def _wire_pages(session: DemoSession, view: SimpleNamespace) -> None:
    """The page buttons of the gallery browser."""
    def turn(number, delta):
        number = min(max(number + delta, 0), max(session.num_pages - 1, 0))
        items = _shown(session.page(number)) if session.retriever else []
        return number, items, _page_label(session, number)

    outputs = [view.page, view.browser, view.page_label]
    view.prev_page.click(lambda n: turn(n, -1), [view.page], outputs)
    view.next_page.click(lambda n: turn(n, 1), [view.page], outputs)


def build_app(session: DemoSession, title: str = 'ssn_plugin: composed image retrieval'):
    """The Gradio page over ``session``. Needs the ``demo`` extra."""
    gr = _import_gradio()
    with gr.Blocks(title=title) as app:
        view = _layout(gr, session, title)
        _wire_references(gr, session, view)
        _wire_search(gr, session, view)
        _wire_pages(session, view)
    return app
