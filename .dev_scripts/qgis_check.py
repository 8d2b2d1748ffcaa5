"""Open demo/image_demo.py's georeferenced outputs in QGIS and check that
they lie where the image says they do.

Runs with the Python that has PyQGIS (Debian: ``apt-get install
python3-qgis qgis-providers``, then ``/usr/bin/python3``), not the project's
virtual environment; no display is needed (Qt's offscreen platform)::

    /usr/bin/python3 .dev_scripts/qgis_check.py scene.tif \\
        out/scene_mask.tif out/scene_mask.geojson out/scene_mask.png \\
        [--roi COL0 ROW0 COL1 ROW1] [--screenshot qgis.png]

QGIS loads the input image, the mask GeoTIFF and the GeoJSON as layers (its
own GDAL/OGR providers, CRS from the files) and the script checks:

1. all three layers are valid; the mask and the polygons carry the image's
   CRS;
2. the mask's pixel grid is the image's (same pixel size, origin on the
   image's grid), covering the whole image or, with ``--roi``, exactly the
   crop ``COL0 ROW0 COL1 ROW1`` (pixels of the input);
3. every mask pixel that QGIS samples at the map coordinates of pixel
   (row, col)'s centre equals pixel (row, col) of the demo's PNG mask (the
   prediction in image coordinates): the mask is placed, not just tagged;
4. the polygons are the mask's 4-connected target regions that QGIS reads
   (less the specks under ``--min-polygon-area`` pixels the demo drops):
   as many, the same area (QGIS geometry, map units²) as their pixels times
   the pixel area, and every polygon's interior point samples 1;
5. the image renders with the mask and polygon layers over it; the picture
   is saved with ``--screenshot``.

Exit status 0 when every check passes; each check prints one line.
"""
import argparse
import os
import sys

os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')

try:
    from qgis.core import (Qgis, QgsApplication, QgsContrastEnhancement,
                           QgsFillSymbol, QgsMapRendererSequentialJob,
                           QgsMapSettings, QgsMultiBandColorRenderer,
                           QgsPointXY, QgsRasterLayer, QgsRasterMinMaxOrigin,
                           QgsRectangle, QgsVectorLayer)
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor, QImage
except ImportError as e:  # pragma: no cover - depends on the system
    sys.exit(f'qgis_check.py needs PyQGIS ({e}); on Debian/Ubuntu: '
             'apt-get install python3-qgis qgis-providers, then run it with '
             '/usr/bin/python3')


class Checks:
    """Collects pass/fail lines."""

    def __init__(self) -> None:
        self.failed = 0

    def __call__(self, ok: bool, what: str) -> bool:
        print(f'[{"ok" if ok else "FAIL"}] {what}', flush=True)
        self.failed += not ok
        return ok


def load_raster(path: str, name: str) -> QgsRasterLayer:
    return QgsRasterLayer(path, name, 'gdal')


def grid(layer: QgsRasterLayer):
    """(left, top, pixel width, pixel height, cols, rows) of a raster."""
    ext = layer.extent()
    return (ext.xMinimum(), ext.yMaximum(), layer.rasterUnitsPerPixelX(),
            layer.rasterUnitsPerPixelY(), layer.width(), layer.height())


def read_png_mask(path: str):
    """(rows, cols) nested lists of 0/1 from the demo's PNG mask."""
    img = QImage(path)
    if img.isNull():
        raise SystemExit(f'cannot read the PNG mask {path}')
    return [[
        1 if QColor(img.pixel(c, r)).value() > 127 else 0
        for c in range(img.width())
    ] for r in range(img.height())]


def component_sizes(pixels) -> list:
    """Pixel counts of the 4-connected regions of 1s in a nested list."""
    rows, cols = len(pixels), len(pixels[0]) if pixels else 0
    seen = [[False] * cols for _ in range(rows)]
    sizes = []
    for r0 in range(rows):
        for c0 in range(cols):
            if pixels[r0][c0] != 1 or seen[r0][c0]:
                continue
            seen[r0][c0] = True
            stack, n = [(r0, c0)], 0
            while stack:
                r, c = stack.pop()
                n += 1
                for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                    if 0 <= rr < rows and 0 <= cc < cols and \
                            pixels[rr][cc] == 1 and not seen[rr][cc]:
                        seen[rr][cc] = True
                        stack.append((rr, cc))
            sizes.append(n)
    return sizes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('image', help='the input GeoTIFF')
    parser.add_argument('mask', help='<name>_mask.tif of image_demo.py')
    parser.add_argument('polygons', help='<name>_mask.geojson')
    parser.add_argument('png_mask', help='<name>_mask.png (image pixels)')
    parser.add_argument(
        '--roi',
        type=int,
        nargs=4,
        metavar=('COL0', 'ROW0', 'COL1', 'ROW1'),
        help='the pixel crop the demo was run with')
    parser.add_argument(
        '--min-polygon-area',
        type=float,
        default=4.0,
        help="image_demo.py's speck threshold (pixels)")
    parser.add_argument(
        '--bands',
        type=int,
        nargs=3,
        default=(3, 2, 1),
        metavar=('R', 'G', 'B'),
        help='image bands shown as red, green, blue (1-based)')
    parser.add_argument('--screenshot', help='save the rendered map here')
    args = parser.parse_args(argv)

    app = QgsApplication([], False)
    app.initQgis()
    check = Checks()
    print(f'QGIS {Qgis.QGIS_VERSION}', flush=True)
    image = load_raster(args.image, 'image')
    mask = load_raster(args.mask, 'mask')
    polys = QgsVectorLayer(args.polygons, 'polygons', 'ogr')
    # 1. layers and CRS
    if not check(image.isValid() and mask.isValid() and polys.isValid(),
                 'QGIS loads the image, the mask GeoTIFF and the GeoJSON'):
        return 1
    crs = image.crs()
    check(
        crs.isValid() and mask.crs() == crs and polys.crs() == crs,
        f'image, mask and polygons share one CRS ({crs.authid()}: '
        f'mask {mask.crs().authid()}, polygons {polys.crs().authid()})')

    # 2. pixel grid
    left, top, px, py, cols, rows = grid(image)
    m_left, m_top, m_px, m_py, m_cols, m_rows = grid(mask)
    col0, row0, col1, row1 = args.roi or (0, 0, cols, rows)
    want = (left + col0 * px, top - row0 * py, px, py, col1 - col0,
            row1 - row0)
    got = (m_left, m_top, m_px, m_py, m_cols, m_rows)
    check(
        all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(got, want)),
        f'mask grid == image pixels [{col0}:{col1}, {row0}:{row1}] '
        f'(left, top, pixel w, h, cols, rows = {got})')

    # 3. placement: QGIS samples == the PNG prediction, pixel by pixel
    png = read_png_mask(args.png_mask)
    provider = mask.dataProvider()
    block = provider.block(1, mask.extent(), m_cols, m_rows)
    qgis_pixels = [[block.value(r, c) for c in range(m_cols)]
                   for r in range(m_rows)]
    wrong = 0
    for r in range(m_rows):
        for c in range(m_cols):
            x = m_left + (c + 0.5) * m_px
            y = m_top - (r + 0.5) * m_py
            value, ok = provider.sample(QgsPointXY(x, y), 1)
            value = int(value) if ok else 255  # 255 = nodata
            png_value = png[r][c] if r < len(png) and c < len(png[r]) else -1
            if value == 255:  # nodata: never target in the PNG either
                wrong += png_value != 0
            else:
                wrong += value != png_value
    target_px = sum(v == 1 for row in qgis_pixels for v in row)
    check(
        len(png) == m_rows and len(png[0]) == m_cols and wrong == 0,
        f'QGIS samples at {m_rows * m_cols} pixel centres == the PNG '
        f'prediction ({wrong} differ; {target_px} target pixels)')
    check(
        target_px > 0, 'the mask has target pixels (a model that '
        'predicts nothing checks nothing)')

    # 4. polygons: area and interior points
    pixel_area = m_px * m_py
    sizes = component_sizes(qgis_pixels)
    kept = [n for n in sizes if n >= args.min_polygon_area]
    areas, inside = [], 0
    for feat in polys.getFeatures():
        geom = feat.geometry()
        areas.append(geom.area())
        value, ok = provider.sample(geom.pointOnSurface().asPoint(), 1)
        inside += bool(ok and int(value) == 1)
    check(
        len(areas) == len(kept) > 0 and inside == len(areas),
        f'{len(areas)} polygons == the {len(kept)} 4-connected target '
        f'regions of >= {args.min_polygon_area:g} px QGIS reads from the '
        f'mask ({len(sizes) - len(kept)} specks dropped); {inside} have '
        'their interior point on a target pixel')
    want_area = sum(kept) * pixel_area
    check(
        abs(sum(areas) - want_area) <= 1e-6 * max(1.0, want_area),
        f'polygon area {sum(areas):.2f} map units² == {sum(kept)} px x '
        f'{pixel_area:g} (of {target_px} target px)')

    # 5. render: image (bands as R, G, B, 2-98 % cut), mask (its colour
    # table), polygon outlines
    renderer = QgsMultiBandColorRenderer(image.dataProvider(), *args.bands)
    image.setRenderer(renderer)
    image.setContrastEnhancement(
        QgsContrastEnhancement.StretchToMinimumMaximum,
        QgsRasterMinMaxOrigin.CumulativeCut)
    polys.renderer().setSymbol(
        QgsFillSymbol.createSimple(
            dict(
                color='0,0,0,0',
                outline_color='255,230,0',
                outline_width='0.5')))
    settings = QgsMapSettings()
    settings.setLayers([polys, mask, image])
    settings.setDestinationCrs(crs)
    settings.setExtent(QgsRectangle(image.extent()))
    settings.setOutputSize(QSize(512, 512))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    picture = job.renderedImage()
    if check(not picture.isNull() and picture.width() == 512,
             'QGIS renders the image with the mask and polygons over it'):
        if args.screenshot:
            picture.save(args.screenshot)
            print(f'screenshot: {args.screenshot}')
        # where the mask says background, the image must show through
        # (the mask's .qml style makes background transparent; without it
        # QGIS draws the GeoTIFF colour table's opaque black)
        scale_x = picture.width() / cols
        scale_y = picture.height() / rows
        visible = total = 0
        for r in range(m_rows):
            for c in range(m_cols):
                if qgis_pixels[r][c] != 0:
                    continue
                x = int((col0 + c + 0.5) * scale_x)
                y = int((row0 + r + 0.5) * scale_y)
                total += 1
                visible += QColor(picture.pixel(x, y)).value() > 8
        check(
            total > 0 and visible > 0.5 * total,
            f'the image shows through the mask\'s background '
            f'({visible} of {total} background pixels not black)')
    print(
        f'{check.failed} check(s) failed'
        if check.failed else 'all checks passed',
        flush=True)
    return 1 if check.failed else 0


if __name__ == '__main__':
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # QGIS 3.22's teardown (exitQgis, or the interpreter freeing layers
    # afterwards) can segfault after all work is done; leave without it so
    # the exit status is the checks'.
    os._exit(code)
