"""rsrefseg_mm.utils.track: rate and ETA on terminals, quiet otherwise."""
import io

from rsrefseg_mm.utils import track
from helpers import REPO, load_script


class FakeTTY(io.StringIO):

    def isatty(self):
        return True


def test_quiet_when_not_a_terminal():
    out = io.StringIO()
    assert list(track(range(5), 'work', file=out)) == list(range(5))
    assert out.getvalue() == ''


def test_bar_with_count_rate_and_eta_on_a_terminal():
    out = FakeTTY()
    items = list(track(list('abcd'), 'checking refs', unit='ref', file=out))
    assert items == list('abcd')
    text = out.getvalue()
    assert 'checking refs' in text and '4/4' in text
    assert 'ref/s' in text and 'ETA' in text


def test_tools_stay_quiet_in_pipes(tmp_path, capsys):
    """browse_dataset.py with a non-terminal stderr prints its result only."""
    tool = load_script('tools/analysis_tools/browse_dataset.py')
    cfg = REPO / 'configs/_base_/datasets/synthetic_referring.py'
    assert tool.main([
        str(cfg), '--output-dir',
        str(tmp_path), '--num', '2', '--cfg-options',
        'train_dataloader.dataset.num_samples=2'
    ]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f'wrote 2 images to {tmp_path}'
    assert '\u2501' not in err and 'ETA' not in err
