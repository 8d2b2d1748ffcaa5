"""Every weight-file reader refuses a pickle that would run code (CLIP,
SAM and SigLIP ``torch.save`` files) and names the file and the opt-in."""
import pytest

from rsrefseg_mm.models.backbones.clip.clip_checkpoint import load_clip_file
from rsrefseg_mm.models.backbones.siglip.siglip_checkpoint import \
    load_siglip_file
from rsrefseg_mm.models.sam.sam_builder import (build_sam_modules,
                                                load_sam_checkpoint)
from rsrefseg_mm.utils import UnsafeCheckpointError
from helpers import TINY_SAM, crafted_checkpoint

READERS = {
    'clip': load_clip_file,
    'siglip': load_siglip_file,
    'sam': lambda path: load_sam_checkpoint(build_sam_modules(TINY_SAM), path),
}


@pytest.mark.parametrize('reader', READERS.values(), ids=READERS.keys())
def test_crafted_pickle_is_refused(reader, tmp_path):
    path, marker = crafted_checkpoint(tmp_path)
    with pytest.raises(UnsafeCheckpointError) as err:
        reader(path)
    msg = str(err.value)
    assert path in msg and 'posix.system' in msg and '--unsafe-load' in msg
    assert not marker.exists()
