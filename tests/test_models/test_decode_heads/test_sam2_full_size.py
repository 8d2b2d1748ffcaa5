"""Full-size SAM 2.1 Hiera-T: the sam2 package's own ``build_sam2`` of
``sam2.1_hiera_t.yaml`` (random weights) saved as the official file in a
Hugging Face style folder, loaded strictly by ``SAM2PromptHead(sam2_arch=
'tiny')`` and compared with ``SAM2ImagePredictor`` on one 1024x1024 image
with a box, two points and a 256x256 mask prompt. ~30 s on 2 CPU cores;
deselect with ``-k "not full_size"``."""
import shutil

import numpy as np
import torch
from sam2_helpers import official_file, randomise_constant_tensors

from rsrefseg_mm.models.decode_heads import SAM2PromptHead
from rsrefseg_mm.models.sam2 import SAM2_CONFIGS
from helpers import assert_close_to_reference


def test_full_size_tiny_parity(tmp_path):
    import sam2
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    torch.manual_seed(0)
    # apply_postprocessing=False: no fall-back to the multimask outputs
    # (dynamic_multimask_via_stability), as in SAM2PromptHead
    model = build_sam2(
        SAM2_CONFIGS['tiny'], None, device='cpu', apply_postprocessing=False)
    randomise_constant_tensors(model)
    folder = tmp_path / 'sam2.1-hiera-tiny'
    folder.mkdir()
    official_file(model, folder / 'sam2.1_hiera_tiny.pt')
    shutil.copy(f'{sam2.__path__[0]}/configs/sam2.1/sam2.1_hiera_t.yaml',
                folder)
    head = SAM2PromptHead(
        sam2_arch='tiny',
        checkpoint=str(folder),
        encoder_tuning=dict(mode='frozen')).eval()

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1024, 1024, 3), np.uint8)
    box = np.array([100., 200., 700., 900.])
    points = np.array([[300., 400.], [800., 120.]])
    labels = np.array([1, 0])
    dense = rng.standard_normal((1, 256, 256)).astype(np.float32) * 4
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(image)
    _, _, theirs = predictor.predict(
        point_coords=points,
        point_labels=labels,
        box=box,
        mask_input=dense,
        multimask_output=False,
        return_logits=True)
    coords = torch.from_numpy(np.concatenate([box.reshape(2, 2),
                                              points])).float()[None]
    point_labels = torch.tensor([[2, 3, *labels]]).int()
    with torch.no_grad():
        sparse, _ = model.sam_prompt_encoder((coords, point_labels), None,
                                             None)
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        feats = head.encode_image(x)
        ours = head(
            dict(
                **feats,
                sparse_prompts=sparse,
                dense_prompts=torch.from_numpy(dense)[None]))
    assert sparse.shape == (1, 5, 256) and ours.shape == (1, 1, 256, 256)
    assert float(np.abs(theirs).max()) < 32  # the predictor clamps at 32
    assert_close_to_reference(
        feats['image_embeddings'],
        predictor._features['image_embed'],
        what='image_embeddings')
    assert_close_to_reference(
        ours[0], torch.from_numpy(theirs), what='mask_logits')
