import os.path as osp
from setuptools import find_packages, setup


def readme() -> str:
    with open('README.md', encoding='utf-8') as f:
        return f.read()


def get_version() -> str:
    scope: dict = {}
    with open(osp.join('rsrefseg_mm', 'version.py')) as f:
        exec(compile(f.read(), 'version.py', 'exec'), scope)
    return scope['__version__']


def parse_requirements(fname: str) -> list:
    """Read a requirements file, following ``-r`` includes."""
    reqs = []
    with open(fname) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if not line:
                continue
            if line.startswith('-r '):
                reqs += parse_requirements(
                    osp.join(osp.dirname(fname), line[3:].strip()))
            else:
                reqs.append(line)
    return reqs


def merge(*lists: list) -> list:
    """Concatenate requirement lists, each requirement once."""
    return list(dict.fromkeys(r for reqs in lists for r in reqs))


#: The extras (``pip install -e ".[geo,web]"``): optional features, tests.
#: The ONNX Runtime predictor (``rsrefseg_deploy`` + ``rsrefseg_core``) is
#: no extra: it installs without the training stack, ``pip install -r
#: requirements/deploy.txt && pip install --no-deps .``.
EXTRAS = dict(
    geo=parse_requirements('requirements/geo.txt'),
    web=parse_requirements('requirements/web.txt'),
    export=parse_requirements('requirements/export.txt'),
    tests=parse_requirements('requirements/tests.txt'))
EXTRAS['all'] = merge(EXTRAS['geo'], EXTRAS['web'], EXTRAS['export'])

setup(
    name='rsrefseg_mm',
    version=get_version(),
    description='RSRefSeg: referring remote-sensing image segmentation with '
    'foundation models, as an MMSegmentation 1.x plugin',
    long_description=readme(),
    long_description_content_type='text/markdown',
    keywords=('referring segmentation, remote sensing, CLIP, SAM, '
              'mmsegmentation'),
    packages=find_packages(exclude=('configs', 'tools', 'demo', 'tests')),
    include_package_data=True,
    python_requires='>=3.8',
    license='Apache-2.0',
    license_files=['LICENSE'],
    install_requires=parse_requirements('requirements/runtime.txt') +
    parse_requirements('requirements/mminstall.txt'),
    extras_require=EXTRAS,
    zip_safe=False)
