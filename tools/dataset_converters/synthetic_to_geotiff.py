"""Write synthetic referring scenes as 16-bit 4-band georeferenced GeoTIFFs.

Each file holds bands blue, green, red, near-infrared (uint16, 12-bit-like
values, nodata 0 along the left edge) in EPSG:32633 at 0.5 m pixels; its
expression is printed (and written to ``expressions.jsonl``), so the
GeoTIFF path of the demo can be tried without real imagery::

    python tools/dataset_converters/synthetic_to_geotiff.py work_dirs/geo \
        --num 2
    python demo/image_demo.py work_dirs/geo/scene_00000.tif "the red circle" \
        CONFIG CHECKPOINT --bands 3 2 1 --out-dir work_dirs/geo/out
"""
import argparse
import json
import os
import os.path as osp
import sys

try:
    from rsrefseg_mm.datasets.synthetic_geotiff import write_synthetic_geotiff
except ImportError:  # running from a clone without `pip install -e .`
    sys.path.insert(0, osp.join(osp.dirname(__file__), '..', '..'))
    from rsrefseg_mm.datasets.synthetic_geotiff import write_synthetic_geotiff


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir', help='output folder')
    parser.add_argument('--num', type=int, default=1, help='number of scenes')
    parser.add_argument('--img-size', type=int, default=128)
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(osp.join(args.out_dir, 'expressions.jsonl'), 'w') as f:
        for i in range(args.num):
            path = osp.join(args.out_dir, f'scene_{i:05d}.tif')
            text, _ = write_synthetic_geotiff(path, i, img_size=args.img_size)
            f.write(
                json.dumps(dict(image=osp.basename(path), text=text)) + '\n')
            print(f'{path}\t{text}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
