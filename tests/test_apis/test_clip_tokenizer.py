"""The export's tokenizer (plain Python, no torch) gives open_clip's SimpleTokenizer ids on
hostile captions, in each cleaning mode, with extra special tokens; it truncates as CLIP does
and names the line of a broken merges file. The exporter refuses a tokenizer that differs."""
import gzip

import numpy as np
import open_clip
import pytest
from open_clip.tokenizer import default_bpe

from helpers import TINY_CLIP, tiny_ssn_cfg
from ssn_plugin.apis.clip_tokenizer import ClipTokenizer
from ssn_plugin.apis.onnx_export import TOKENIZER_CHECK_TEXTS, export_onnx
from ssn_plugin.registry import MODELS

HOSTILE = [
    'a red cube', 'Make it RED &amp; remove the dog!!', '&lt;b&gt;bold&lt;/b&gt; &amp;amp;',
    '  naïve café — 12,345 Ünïcödé  ', 'cafe\u0301 vs caf\u00e9', 'Ã©tÃ© (mojibake)',
    '中文字符と日本語', 'emoji 🐶🐱👩‍👩‍👧', "don't it's we'll they've I'M", 'tab\tnew\nline',
    '\x00\x07 control', '<end_of_text> inside, <START_OF_TEXT> too', '', '   ', 'x' * 300,
    'word ' * 100, 'snake_case and kebab-case 3.14159', 'ﬁ ligature, ＦＵＬＬ width',
]


@pytest.fixture(scope='module')
def merges():
    return default_bpe()


@pytest.mark.parametrize('clean', ['lower', 'whitespace', 'canonicalize'])
def test_the_ids_of_open_clip(merges, clean):
    ours = ClipTokenizer(merges, clean=clean)
    theirs = open_clip.SimpleTokenizer(clean=clean)
    assert ours.encoder == theirs.encoder and ours.bpe_ranks == theirs.bpe_ranks
    got = ours(HOSTILE)
    assert got.dtype == np.int64 and got.shape == (len(HOSTILE), 77)
    assert np.array_equal(got, theirs(HOSTILE).numpy())


def test_extra_special_tokens_and_other_context_lengths(merges):
    specials = ['<start_of_text>', '<end_of_text>', '<mask>']
    ours = ClipTokenizer(merges, context_length=16, special_tokens=specials)
    theirs = open_clip.SimpleTokenizer(context_length=16, additional_special_tokens=['<mask>'])
    texts = HOSTILE + ['a <mask> on the left', '<mask><mask>']
    assert np.array_equal(ours(texts), theirs(texts).numpy())
    assert ours.encoder['<mask>'] == 49408  # after the 49,408 ids of the plain vocabulary


def test_truncation_keeps_the_end_token(merges):
    """Written out: start, the first ids that fit, end; nothing past the context length."""
    tokenizer = ClipTokenizer(merges, context_length=5)
    one, two, three = (tokenizer.encoder[w + '</w>'] for w in ('one', 'two', 'three'))
    assert tokenizer(['one two three four five']).tolist() == [
        [tokenizer.sot_token_id, one, two, three, tokenizer.eot_token_id]]
    assert tokenizer(['one']).tolist() == [[tokenizer.sot_token_id, one,
                                            tokenizer.eot_token_id, 0, 0]]
    # Trimmed after the longest caption's end token, as the backbone's tokenize trims.
    assert tokenizer.trimmed(['one', 'one two']).tolist() == [
        [tokenizer.sot_token_id, one, tokenizer.eot_token_id, 0],
        [tokenizer.sot_token_id, one, two, tokenizer.eot_token_id]]


def test_a_plain_text_merges_file_and_a_single_caption(tmp_path, merges):
    """The merges file may be unpacked (read as text, not through gzip); one caption given as
    a string is one row."""
    plain = tmp_path / 'bpe_simple_vocab_16e6.txt'
    with gzip.open(merges) as f:
        plain.write_bytes(f.read())
    packed, unpacked = ClipTokenizer(merges), ClipTokenizer(str(plain))
    assert unpacked.bpe_ranks == packed.bpe_ranks and unpacked.encoder == packed.encoder
    caption = 'Make it RED &amp; remove the dog!!'
    one = unpacked(caption)
    assert one.shape == (1, 77)
    assert np.array_equal(one, open_clip.SimpleTokenizer()([caption]).numpy())


def test_a_broken_merges_file_is_named_with_its_line(tmp_path, merges):
    with gzip.open(merges) as f:
        lines = f.read().decode('utf-8').split('\n')
    lines[3] = 'three parts here'
    broken = tmp_path / 'bpe.txt.gz'
    with gzip.open(broken, 'wb') as f:
        f.write('\n'.join(lines).encode('utf-8'))
    with pytest.raises(ValueError, match=r'bpe\.txt\.gz, line 4: expected a merge'):
        ClipTokenizer(str(broken))
    with pytest.raises(ValueError, match='clean must be one of'):
        ClipTokenizer(merges, clean='upper')


def test_the_exporter_refuses_a_tokenizer_that_differs(tmp_path, monkeypatch):
    """A shipped tokenizer that would give other ids (here: another cleaning than the model's)
    stops the export before any file is written."""
    model = MODELS.build(tiny_ssn_cfg(TINY_CLIP))
    spec = model.clip.tokenizer_spec()
    assert spec['clean'] == 'lower' and spec['merges_file'] == default_bpe()
    monkeypatch.setattr(type(model.clip), 'tokenizer_spec',
                        lambda self: dict(spec, clean='whitespace'))
    assert any(t != t.lower() for t in TOKENIZER_CHECK_TEXTS)  # the check can see it
    with pytest.raises(RuntimeError, match="gives other ids than the model's"):
        export_onnx(model, str(tmp_path / 'out'))
    assert not (tmp_path / 'out').exists()
