"""A model folder is read only if deploy.json is sound: files confined to
the folder, contents equal to the hashes recorded at export, settings that
cannot answer silently wrong."""
import json
import math
import os

import pytest

from rsrefseg_core.deploy_info import (DEPLOY_FORMAT, GRAPHS, DeployInfoError,
                                       file_sha256, model_files,
                                       read_deploy_info)

GRAPH_IO = dict(
    image_encoder=dict(
        inputs=['image'], outputs=['img_feats', 'image_embeddings']),
    text_encoder=dict(
        inputs=['token_ids'],
        outputs=['text_global', 'text_feats', 'text_mask']),
    decoder=dict(
        inputs=[
            'img_feats', 'image_embeddings', 'text_global', 'text_feats',
            'text_mask'
        ],
        outputs=['logits', 'global_map']))


def make_folder(root, **overrides):
    folder = root / 'model'
    folder.mkdir()
    for name, content in (('image_encoder.onnx', b'encoder graph'),
                          ('image_encoder.onnx.data', b'encoder tensors'),
                          ('text_encoder.onnx', b'text graph'),
                          ('decoder.onnx', b'decoder graph'), ('bpe.txt.gz',
                                                               b'merges')):
        (folder / name).write_bytes(content)
    info = dict(
        format=DEPLOY_FORMAT,
        image_encoder='image_encoder.onnx',
        text_encoder='text_encoder.onnx',
        decoder='decoder.onnx',
        graphs=GRAPH_IO,
        input_size=[64, 64],
        threshold=0.5,
        tokenizer=dict(kind='clip-bpe', file='bpe.txt.gz', context_length=77),
        dynamic_expressions=True,
        num_expressions=2)
    info['files'] = model_files(
        str(folder), [f'{g}.onnx' for g in GRAPHS] + ['bpe.txt.gz'])
    info.update(overrides)
    (folder / 'deploy.json').write_text(json.dumps(info))
    return folder


def test_sound_folder_reads(tmp_path):
    folder = make_folder(tmp_path)
    info = read_deploy_info(str(folder))
    assert set(info['files']) == {
        'image_encoder.onnx', 'image_encoder.onnx.data', 'text_encoder.onnx',
        'decoder.onnx', 'bpe.txt.gz'
    }
    assert info['paths']['decoder'] == str(folder / 'decoder.onnx')
    assert info['paths']['text_encoder'] == str(folder / 'text_encoder.onnx')
    assert info['files']['decoder.onnx'] == file_sha256(
        str(folder / 'decoder.onnx'))


@pytest.mark.parametrize(
    'name', ['decoder.onnx', 'text_encoder.onnx', 'image_encoder.onnx.data'])
def test_changed_file_is_refused(tmp_path, name):
    folder = make_folder(tmp_path)
    with open(folder / name, 'ab') as f:
        f.write(b'\xff' * 16)
    with pytest.raises(DeployInfoError, match=f'{name}.*sha256'):
        read_deploy_info(str(folder))
    # the check can be skipped explicitly
    read_deploy_info(str(folder), verify_hashes=False)


@pytest.mark.parametrize(
    'decoder',
    ['/etc/passwd', '../decoder.onnx', 'sub/decoder.onnx', '', '..', None, 7])
def test_paths_outside_the_folder_are_refused(tmp_path, decoder):
    folder = make_folder(tmp_path, decoder=decoder)
    with pytest.raises(DeployInfoError, match='decoder.*plain file name'):
        read_deploy_info(str(folder))


def test_link_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / 'secret.onnx'
    outside.write_bytes(b'not yours')
    folder = make_folder(tmp_path)
    os.remove(folder / 'decoder.onnx')
    os.symlink(outside, folder / 'decoder.onnx')
    with pytest.raises(DeployInfoError, match='leads out of the model'):
        read_deploy_info(str(folder))


@pytest.mark.parametrize('threshold',
                         ['nan', math.nan, math.inf, 0, 1, 1.5, -0.1, True])
def test_threshold_must_be_finite_in_0_1(tmp_path, threshold):
    folder = tmp_path / 'f'
    folder.mkdir()
    folder = make_folder(folder, threshold=threshold)
    with pytest.raises(DeployInfoError, match='threshold'):
        read_deploy_info(str(folder))


@pytest.mark.parametrize(
    'presence', ['nan', '0.5', math.nan, math.inf, 0, 1, 1.5, -0.1, True])
def test_presence_threshold_must_be_finite_in_0_1(tmp_path, presence):
    folder = make_folder(tmp_path, presence_threshold=presence)
    with pytest.raises(
            DeployInfoError,
            match=r'deploy\.json: presence_threshold must be a finite number '
            r'in \(0, 1\)'):
        read_deploy_info(str(folder))


@pytest.mark.parametrize('presence', [None, 'absent', 0.5, 0.25])
def test_presence_threshold_optional(tmp_path, presence):
    overrides = {} if presence == 'absent' else \
        dict(presence_threshold=presence)
    info = read_deploy_info(str(make_folder(tmp_path, **overrides)))
    assert info['presence_threshold'] == (None if presence == 'absent' else
                                          presence)


@pytest.mark.parametrize('scene,expected', [('absent', 0.5), (0.9, 0.9),
                                            (0.5, 0.5), (0.3, 'below'),
                                            (None, 'finite'), (1.0, 'finite')])
def test_scene_presence_threshold(tmp_path, scene, expected):
    overrides = dict(presence_threshold=0.5)
    if scene != 'absent':
        overrides['scene_presence_threshold'] = scene
    folder = str(make_folder(tmp_path, **overrides))
    if isinstance(expected, str):
        with pytest.raises(DeployInfoError, match=expected):
            read_deploy_info(folder)
    else:
        info = read_deploy_info(folder)
        assert info['scene_presence_threshold'] == expected


def test_scene_presence_threshold_needs_presence(tmp_path):
    folder = make_folder(
        tmp_path, presence_threshold=None, scene_presence_threshold=0.9)
    with pytest.raises(DeployInfoError, match='without presence_threshold'):
        read_deploy_info(str(folder))


def test_missing_hashes_and_bad_settings(tmp_path):
    for i, (override, match) in enumerate([
        (dict(files=None), 'no file hashes'),
        (dict(files={}), 'no sha256 recorded for image_encoder.onnx'),
        (dict(format='other/1'), 'format'),
        (dict(text_encoder=None), 'text_encoder must be a plain file name'),
        (dict(graphs=None), 'graphs must map'),
        (dict(graphs=dict(GRAPH_IO, text_encoder=dict(inputs=['token_ids']))),
         r'graphs\.text_encoder\.outputs must be a list of names'),
        (dict(input_size=[0, 64]), 'input_size'),
        (dict(tokenizer=dict(kind='pickle', file='bpe.txt.gz')), 'kind'),
    ]):
        root = tmp_path / str(i)
        root.mkdir()
        with pytest.raises(DeployInfoError, match=match):
            read_deploy_info(str(make_folder(root, **override)))


def test_not_a_deploy_json(tmp_path):
    folder = make_folder(tmp_path)
    (folder / 'deploy.json').write_text('[' * 100000 + ']' * 100000)
    with pytest.raises(DeployInfoError, match='deploy.json'):
        read_deploy_info(str(folder))
    with pytest.raises(FileNotFoundError, match='export_onnx.py'):
        read_deploy_info(str(tmp_path / 'nowhere'))


def test_two_graph_layout_is_refused(tmp_path):
    """A folder of the earlier layout (the text tower inside decoder.onnx)
    is refused with the command that exports it again."""
    folder = make_folder(tmp_path, format='rsrefseg-onnx/1')
    with pytest.raises(
            DeployInfoError,
            match=r"format 'rsrefseg-onnx/1', the two-graph layout .* export "
            r'the model again with tools/deployment/export_onnx\.py'):
        read_deploy_info(str(folder))


@pytest.mark.parametrize('text_filter,ok',
                         [('absent', True), (None, True),
                          (dict(scale=14.3, bias=-2), True),
                          (dict(scale=math.nan, bias=0.), False),
                          (dict(scale=1.), False),
                          (dict(scale=True, bias=0.), False),
                          ([1., 0.], False),
                          (dict(scale='1', bias=0.), False)])
def test_text_filter_is_optional_and_finite(tmp_path, text_filter, ok):
    overrides = {} if text_filter == 'absent' else \
        dict(text_filter=text_filter)
    folder = str(make_folder(tmp_path, **overrides))
    if ok:
        read_deploy_info(folder)
    else:
        with pytest.raises(
                DeployInfoError, match='text_filter must give a finite scale'):
            read_deploy_info(folder)
