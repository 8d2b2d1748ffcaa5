"""Shared fixtures of the model tests (SigLIP weights; the tokenizer model
``siglip_spiece`` comes from tests/conftest.py)."""
import pytest

from siglip_helpers import TINY_SIGLIP, random_hf_siglip, save_hf_folder


@pytest.fixture(scope='session')
def tiny_siglip_folder(tmp_path_factory, siglip_spiece):
    """(folder, hf_model): a Hugging Face style folder with
    ``model.safetensors`` of a random tiny SiglipModel and ``spiece.model``."""
    model = random_hf_siglip(TINY_SIGLIP)
    folder = str(tmp_path_factory.mktemp('siglip-tiny'))
    return save_hf_folder(folder, model, siglip_spiece), model
