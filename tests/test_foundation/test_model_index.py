"""configs/rsrefseg/metafile.yaml and configs/rsrefseg2/metafile.yaml
(OpenMMLab model index) list every config, and their figures are those the
tools and the demo give."""

import pytest
import yaml

from helpers import REPO, load_script

METAFILE = REPO / 'configs' / 'rsrefseg' / 'metafile.yaml'
METAFILE2 = REPO / 'configs' / 'rsrefseg2' / 'metafile.yaml'


def load_metafile() -> dict:
    return yaml.safe_load(METAFILE.read_text())


def test_model_index_imports_the_metafile():
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    assert index == {
        'Import':
        ['configs/rsrefseg/metafile.yaml', 'configs/rsrefseg2/metafile.yaml']
    }
    for path in index['Import']:
        assert (REPO / path).is_file()


def test_every_config_is_listed_and_every_listed_config_exists():
    meta = load_metafile()
    collections = {c['Name'] for c in meta['Collections']}
    assert (REPO / meta['Collections'][0]['README']).is_file()
    listed = {}
    for model in meta['Models']:
        assert model['In Collection'] in collections, model['Name']
        assert (REPO / model['Config']).is_file(), model['Config']
        assert model['Config'].endswith(f'/{model["Name"]}.py')
        listed[model['Name']] = model
    on_disk = {p.stem for p in (REPO / 'configs' / 'rsrefseg').glob('*.py')}
    assert set(listed) == on_disk
    assert len(meta['Models']) == len(listed)  # no name twice


def test_parameters_are_those_of_the_configs(siglip_spiece):
    count_params = load_script('tools/analysis_tools/count_params.py')
    for model in load_metafile()['Models']:
        built = count_params.build_on_meta(
            str(REPO / model['Config']), siglip_spiece)
        total = count_params.count_parameters(built)['total']
        assert model['Metadata']['Parameters'] == total, model['Name']


def test_listed_results_are_the_readme_demo_results():
    """Only the tiny configs have measured results: the `make demo` model
    (generalized) in the README's demo table, one row per test split, and
    the single-target config's earlier run in the sentence below it."""
    readme = (REPO / 'README.md').read_text()
    demo = readme[readme.index('### `make demo`'):readme.index('### RRSIS-D')]
    models = {
        m['Name']: m
        for m in load_metafile()['Models'] if 'Results' in m
    }
    gres = 'rsrefseg-tiny-gres_clip-tiny-sam-tiny_1xb16-adamw-1200it_' \
        'synthetic-128x128'
    single = 'rsrefseg-tiny_clip-tiny-sam-tiny_1xb16-adamw-1200it_' \
        'synthetic-128x128'
    assert sorted(models) == [gres, single]
    keys = ('oIoU', 'mIoU', 'Pr@0.5', 'Pr@0.7', 'Pr@0.9', 'gIoU', 'N-acc',
            'T-acc')
    rows = ['test (single target)', 'test, 20 % no-target, 10 % multi-target']
    assert len(models[gres]['Results']) == len(rows)
    for name, result in zip(rows, models[gres]['Results']):
        metrics = result['Metrics']
        row = ' | '.join(f'{metrics[k]:.2f}' if k in metrics else '-'
                         for k in keys)
        assert f'| {name} | {row} |' in demo, row
    metrics = models[single]['Results']['Metrics']
    figures = ', '.join(f'{k} {metrics[k]:.2f}'
                        for k in ('oIoU', 'mIoU', 'Pr@0.5', 'Pr@0.7',
                                  'Pr@0.9'))
    assert figures in ' '.join(demo.split()), figures


@pytest.mark.parametrize('key',
                         ['Training Data', 'Batch Size', 'Architecture'])
def test_every_model_states(key):
    for model in load_metafile()['Models']:
        assert model['Metadata'].get(key), (model['Name'], key)


def test_rsrefseg2_metafile(gemma_spiece):
    """configs/rsrefseg2/metafile.yaml lists every RSRefSeg 2 config once,
    with the parameters count_params.py counts (a Gemma tokenizer for the
    SigLIP 2 configs) and the FLOPs of the docs."""
    meta = yaml.safe_load(METAFILE2.read_text())
    assert [c['Name'] for c in meta['Collections']] == ['RSRefSeg2']
    names = [m['Name'] for m in meta['Models']]
    on_disk = {p.stem for p in METAFILE2.parent.glob('*.py')}
    assert sorted(names) == sorted(on_disk)
    count_params = load_script('tools/analysis_tools/count_params.py')
    docs = (REPO / 'docs' / 'rsrefseg2.md').read_text()
    built = {}
    for model in meta['Models']:
        assert model['Config'].endswith(f'/{model["Name"]}.py')
        for key in ('Training Data', 'Batch Size', 'Architecture'):
            assert model['Metadata'].get(key), (model['Name'], key)
        # the variants share a model: count each model once
        arch = yaml.safe_dump(model['Metadata']['Architecture'][:4])
        if arch not in built:
            m = count_params.build_on_meta(
                str(REPO / model['Config']), gemma_spiece)
            built[arch] = count_params.count_parameters(m)['total']
        assert model['Metadata']['Parameters'] == built[arch], model['Name']
        if 'FLOPs' in model['Metadata']:
            giga = f"{model['Metadata']['FLOPs'] / 1e9:,.1f}"
            assert f'**{giga}**' in docs, giga
