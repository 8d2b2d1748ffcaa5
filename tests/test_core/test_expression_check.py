"""rsrefseg_core.text: the one expression check of the datasets, the
inference API, both predictors and the demos."""
import pytest

from rsrefseg_core.text import check_expression, clean_expression


@pytest.mark.parametrize(
    'text, cleaned',
    [
        ('  the red\u00a0 circle ', 'the red circle'),
        ('tank &amp; road', 'tank & road'),
        ('caf\u00c3\u00a9', 'caf\u00e9'),  # mojibake repaired by ftfy
    ])
def test_clean_expression(text, cleaned):
    assert clean_expression(text) == cleaned


def test_check_expression_returns_the_stripped_text():
    assert check_expression('  the red circle ', 'x') == 'the red circle'
    assert check_expression('tank #2', 'x') == 'tank #2'


@pytest.mark.parametrize('text, message', [
    (None, 'empty or missing'),
    (3, 'empty or missing'),
    ('', 'empty or missing'),
    ('   \n', 'empty or missing'),
    ('&nbsp;', 'empty after ftfy / HTML clean-up'),
    ('&amp;#32;', 'empty after ftfy / HTML clean-up'),
    ('\u00a0\u00a0', 'empty or missing'),
    ('&#160;&nbsp;', 'empty after ftfy / HTML clean-up'),
    ('...', 'punctuation removal'),
    ('?! -', 'punctuation removal'),
])
def test_check_expression_refuses(text, message):
    with pytest.raises(ValueError, match=f'^refs.p ref 7: .*{message}'):
        check_expression(text, 'refs.p ref 7')


def test_old_module_is_gone():
    with pytest.raises(ImportError):
        import rsrefseg_mm.datasets.text  # noqa: F401


def test_max_chars_counts_the_stripped_text():
    assert check_expression('  ' + 'a' * 300 + '\n', 'x', max_chars=300) == \
        'a' * 300
    with pytest.raises(ValueError) as exc:
        check_expression('a' * 50_000, 'expression', max_chars=300)
    assert str(exc.value) == ('expression: the expression is too long '
                              '(50000 characters, at most 300)')
    # the length is checked before the (linear) clean-up
    with pytest.raises(ValueError, match='too long'):
        check_expression('&nbsp;' * 100, 'x', max_chars=300)
    assert check_expression('a' * 50_000, 'x') == 'a' * 50_000  # no cap
