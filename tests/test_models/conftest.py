"""Shared fixtures of the model tests (SigLIP tokenizer model and weights)."""
import pytest
from siglip_helpers import TINY_SIGLIP, random_hf_siglip, save_hf_folder, \
    train_spiece


@pytest.fixture(scope='session')
def siglip_spiece(tmp_path_factory) -> str:
    """Path of a small ``spiece.model`` with SigLIP's special ids."""
    return train_spiece(str(tmp_path_factory.mktemp('spiece')))


@pytest.fixture(scope='session')
def tiny_siglip_folder(tmp_path_factory, siglip_spiece):
    """(folder, hf_model): a Hugging Face style folder with
    ``model.safetensors`` of a random tiny SiglipModel and ``spiece.model``."""
    model = random_hf_siglip(TINY_SIGLIP)
    folder = str(tmp_path_factory.mktemp('siglip-tiny'))
    return save_hf_folder(folder, model, siglip_spiece), model
