"""tools/analysis_tools/scene_memory_benchmark.py on a small scene: the
scene it writes, one measured subprocess, the table, the clean-up."""
import numpy as np
import rasterio

from helpers import load_script


def test_scene_is_written_block_by_block(tmp_path):
    bench = load_script('tools/analysis_tools/scene_memory_benchmark.py')
    path = str(tmp_path / 'scene.tif')
    bench.write_scene(path, 1300, overviews=True)
    with rasterio.open(path) as src:
        assert (src.width, src.height, src.count) == (1300, 1300, 4)
        assert src.dtypes[0] == 'uint16' and src.nodata == 0
        assert src.profile['compress'] == 'deflate' and src.is_tiled
        assert src.overviews(1) == [4]  # down to >= 256 px
        data = src.read(window=((0, 600), (0, 1300)))
    margin = int(1300 * bench.MARGIN)
    assert (data[:, :, :margin] == 0).all()
    assert (data[:, :, margin:] > 0).all()
    # rows past the first written block hold the parcels too
    assert len(np.unique(data[0, 300:, margin:])) > 3


def test_one_run_and_the_table(tmp_path, capsys):
    bench = load_script('tools/analysis_tools/scene_memory_benchmark.py')
    bench.main(
        ['--sizes', '1024', '--repeats', '1', '--work-dir',
         str(tmp_path)])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith('| scene (px) | file | image read (px)')
    row = out[-1].split('|')
    assert row[1].strip() == '1,024 x 1,024'
    assert row[3].strip() == '256 x 256'  # 2 x the tiny model's input
    assert float(row[8].split()[0]) > 0 and row[9].strip() == '1'
    assert list(tmp_path.iterdir()) == []  # scene and outputs deleted
