"""CLIP's byte-level BPE tokenizer in plain Python, for serving an ONNX export without torch.

It reads the merges file that ``tools/export_onnx.py`` copies next to the graphs (open_clip's
``bpe_simple_vocab_16e6.txt.gz``) and gives the token ids of ``open_clip.SimpleTokenizer``:
the same cleaning (ftfy, HTML entities, whitespace; lower case or canonical form), the same
word split (``regex`` with Unicode classes), the same merges and special tokens, the same
truncation (the last id kept is the end-of-text one). The exporter compares the two on its
check captions and refuses to write an export where they differ; the tests compare them on
hostile captions.

Needs ``regex`` and ``ftfy`` (both already installed with open_clip; a serving install adds
them with ``requirements/serve.txt``).
"""
import gzip
import hashlib
import html
import string
from typing import Dict, List, Sequence, Tuple

import numpy as np

#: The vocabulary is the 256 byte symbols, each also as a word end, these merges, the specials.
MAX_MERGES = 49152 - 256 - 2
CLEAN_MODES = ('lower', 'whitespace', 'canonicalize')
DEFAULT_SPECIAL_TOKENS = ('<start_of_text>', '<end_of_text>')


def _text_libraries():
    """``regex`` and ``ftfy``, or an error naming the install that provides them."""
    try:
        import ftfy
        import regex
    except ImportError as err:
        raise ImportError('the CLIP tokenizer needs regex and ftfy: pip install -r '
                          'requirements/serve.txt (or the full install, which has them)'
                          ) from err
    return regex, ftfy


def byte_symbols() -> Dict[int, str]:
    """One printable character per byte value: the printable Latin-1 bytes stand for
    themselves, the others (controls, space, soft hyphen...) for characters from U+0100 on, in
    byte order. BPE then works on text with no whitespace or control characters in it. The
    order of the dict (printable bytes first, then the others) is the order of the first 256
    ids of the vocabulary."""
    printable = [*range(ord('!'), ord('~') + 1), *range(ord('\xa1'), ord('\xac') + 1),
                 *range(ord('\xae'), ord('\xff') + 1)]
    others = [b for b in range(256) if b not in printable]
    symbols = {b: chr(b) for b in printable}
    symbols.update({b: chr(256 + i) for i, b in enumerate(others)})
    return symbols


def read_merges(path: str) -> List[Tuple[str, str]]:
    """The merge rules of a merges file (gzip or plain text): a header line, then one
    ``left right`` pair per line, best first; at most :data:`MAX_MERGES` are used."""
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        lines = f.read().decode('utf-8').split('\n')
    merges = []
    for number, line in enumerate(lines[1:MAX_MERGES + 1], start=2):
        pair = tuple(line.split())
        if len(pair) != 2:
            raise ValueError(f'{path}, line {number}: expected a merge "left right", got '
                             f'{line!r}')
        merges.append(pair)
    return merges


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


class ClipTokenizer:
    """Token ids of captions as ``open_clip.SimpleTokenizer`` gives them, as a numpy array.

    Args:
        merges_file (str): The BPE merges file (``bpe_simple_vocab_16e6.txt.gz``).
        context_length (int): Ids per caption (0-padded, truncated to it). Defaults to 77.
        clean (str): ``'lower'`` (open_clip's default), ``'whitespace'`` or
            ``'canonicalize'``. Defaults to 'lower'.
        special_tokens (Sequence[str]): Start, end, then any additional special tokens.
            Defaults to ``('<start_of_text>', '<end_of_text>')``.

    Examples:
        >>> tokenizer = ClipTokenizer('export/bpe_simple_vocab_16e6.txt.gz')  # doctest: +SKIP
        >>> tokenizer(['a red cube'])[0, :5]  # doctest: +SKIP
        array([49406,   320,   736, 11353, 49407])
    """

    def __init__(self, merges_file: str, context_length: int = 77, clean: str = 'lower',
                 special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS):
        if clean not in CLEAN_MODES:
            raise ValueError(f'clean must be one of {CLEAN_MODES}, got {clean!r}')
        if len(special_tokens) < 2:
            raise ValueError('special_tokens needs at least the start and the end token')
        regex, self._ftfy = _text_libraries()
        merges = read_merges(merges_file)
        self._byte_symbols = byte_symbols()
        symbols = list(self._byte_symbols.values())
        vocab = symbols + [s + '</w>' for s in symbols] + [a + b for a, b in merges] + \
            list(special_tokens)
        self.encoder: Dict[str, int] = {token: i for i, token in enumerate(vocab)}
        self.bpe_ranks: Dict[Tuple[str, str], int] = {pair: i for i, pair in enumerate(merges)}
        self.special_tokens = list(special_tokens)
        self.sot_token_id = self.encoder[special_tokens[0]]
        self.eot_token_id = self.encoder[special_tokens[1]]
        self.context_length = context_length
        self.clean = clean
        # Specials first (matched whole, unescaped, as open_clip does), then contractions,
        # letter runs, single digits, and runs of anything else that is not whitespace.
        self._words = regex.compile(
            '|'.join(special_tokens) +
            r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE)
        self._cache: Dict[str, List[str]] = {}

    # ------------------------------------------------------------------ text
    def clean_text(self, text: str) -> str:
        """ftfy's repairs, HTML entities undone twice, whitespace runs to one space; then
        lower case (``'lower'``), or punctuation removed and lower case (``'canonicalize'``)."""
        text = html.unescape(html.unescape(self._ftfy.fix_text(text))).strip()
        if self.clean == 'canonicalize':
            text = text.replace('_', ' ').translate(str.maketrans('', '', string.punctuation))
            return ' '.join(text.lower().split())
        text = ' '.join(text.split())
        return text.lower() if self.clean == 'lower' else text

    def merge(self, word: str) -> List[str]:
        """The BPE pieces of one word (byte symbols): the best-ranked adjacent pair merged,
        everywhere in the word, until no pair of the word has a rank."""
        if word in self._cache:
            return self._cache[word]
        pieces = list(word[:-1]) + [word[-1] + '</w>']
        while len(pieces) > 1:
            ranked = [(self.bpe_ranks.get(pair, MAX_MERGES), pair)
                      for pair in zip(pieces, pieces[1:])]
            rank, (left, right) = min(ranked, key=lambda item: item[0])
            if rank == MAX_MERGES:
                break
            merged, i = [], 0
            while i < len(pieces):
                if i + 1 < len(pieces) and pieces[i] == left and pieces[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(pieces[i])
                    i += 1
            pieces = merged
        self._cache[word] = pieces
        return pieces

    def encode(self, text: str) -> List[int]:
        """The ids of one caption, without the start and end tokens."""
        ids = []
        for word in self._words.findall(self.clean_text(text)):
            if word in self.special_tokens:
                ids.append(self.encoder[word])
                continue
            symbols = ''.join(self._byte_symbols[b] for b in word.encode('utf-8'))
            ids.extend(self.encoder[piece] for piece in self.merge(symbols))
        return ids

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """int64 ids [N, context_length]: start, the caption, end, then zeros; a caption too
        long is cut to the context length with the end token as its last id."""
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.context_length), np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(ids) > self.context_length:
                ids = ids[:self.context_length - 1] + [self.eot_token_id]
            out[row, :len(ids)] = ids
        return out

    def trimmed(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`__call__` cut after the longest caption's end token, as
        ``OpenCLIPBackbone.tokenize`` trims (what the query composer graph is fed)."""
        ids = self(texts)
        ends = (ids == self.eot_token_id).argmax(axis=1)
        return ids[:, :int(ends.max()) + 1]
