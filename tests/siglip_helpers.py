"""SigLIP test helpers: a SentencePiece model trained here in SigLIP's id
layout (<pad> 0, </s> 1, <unk> 2), tiny random transformers ``SiglipModel``
weights and a Hugging Face style folder (model.safetensors + spiece.model).
Imported by tests/test_models/conftest.py, the end-to-end and the tool
tests (``tests/`` is on pytest's pythonpath)."""
from helpers import REPO, TINY_SAM, load_script

#: ``tools/misc/train_spiece.py``'s ``train_spiece(out_dir)``.
train_spiece = load_script('tools/misc/train_spiece.py').train_spiece

TINY_SIGLIP = dict(  # a SigLIPBackbone arch dict
    image_size=32,
    patch_size=8,
    embed_dims=32,
    num_layers=2,
    num_heads=4,
    hidden_dims=64,
    text_embed_dims=32,
    text_num_layers=2,
    text_num_heads=4,
    text_hidden_dims=64,
    output_dims=32,
    context_length=64,
    vocab_size=256)


def hf_siglip_config(arch: dict):
    """transformers ``SiglipConfig`` of one of SigLIPBackbone's arch dicts."""
    from transformers import SiglipConfig
    return SiglipConfig(
        text_config=dict(
            vocab_size=arch['vocab_size'],
            hidden_size=arch['text_embed_dims'],
            intermediate_size=arch['text_hidden_dims'],
            num_hidden_layers=arch['text_num_layers'],
            num_attention_heads=arch['text_num_heads'],
            max_position_embeddings=arch['context_length'],
            projection_size=arch['output_dims']),
        vision_config=dict(
            hidden_size=arch['embed_dims'],
            intermediate_size=arch['hidden_dims'],
            num_hidden_layers=arch['num_layers'],
            num_attention_heads=arch['num_heads'],
            image_size=arch['image_size'],
            patch_size=arch['patch_size']))


def random_hf_siglip(arch: dict, seed: int = 0):
    """A transformers ``SiglipModel`` whose every tensor is random (also the
    LayerNorm weights and biases, so that swapped norms cannot pass)."""
    import torch
    from transformers import SiglipModel
    torch.manual_seed(seed)
    model = SiglipModel(hf_siglip_config(arch)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-4.0)
    return model


def save_hf_folder(folder: str, model, spiece: str) -> str:
    """Write ``model.safetensors`` of a transformers model and copy
    ``spiece.model`` into ``folder``, as the Hugging Face hub lays it out."""
    import os.path as osp
    import shutil

    from safetensors.torch import save_file
    save_file({k: v.contiguous()
               for k, v in model.state_dict().items()},
              osp.join(folder, 'model.safetensors'))
    shutil.copy(spiece, osp.join(folder, 'spiece.model'))
    return folder


# ---------------------------------------------------------------- SigLIP 2
#: ``tools/misc/train_gemma_spiece.py``'s ``train_gemma_spiece(out_dir)``: a
#: small ``tokenizer.model`` in the layout of SigLIP 2's Gemma tokenizer.
train_gemma_spiece = load_script(
    'tools/misc/train_gemma_spiece.py').train_gemma_spiece

TINY_SIGLIP2 = dict(TINY_SIGLIP, vocab_size=768, tokenizer_type='gemma')


def hf_gemma_tokenizer(model_file: str, fast: bool = True):
    """transformers' Gemma tokenizer of ``model_file`` as the SigLIP 2
    folders configure it: no BOS, EOS appended, padded on the right."""
    from transformers import GemmaTokenizer, GemmaTokenizerFast
    kwargs = dict(
        add_bos_token=False,
        add_eos_token=True,
        padding_side='right',
        model_max_length=64)
    if fast:
        return GemmaTokenizerFast(vocab_file=model_file, **kwargs)
    return GemmaTokenizer(model_file, **kwargs)


def save_hf_siglip2_folder(folder: str,
                           model,
                           tokenizer_model: str,
                           tokenizer_json: bool = True) -> str:
    """Write a SigLIP 2 (fixed resolution) Hugging Face folder as the hub
    lays it out: ``config.json`` (``model_type`` ``"siglip"``) and
    ``model.safetensors`` by ``save_pretrained``, Gemma's ``tokenizer.model``
    and (``tokenizer_json``; the conversion takes seconds) the
    ``tokenizer.json`` / ``tokenizer_config.json`` that transformers writes
    for it."""
    import os.path as osp
    import shutil
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer_json:
        hf_gemma_tokenizer(tokenizer_model).save_pretrained(folder)
    if not osp.isfile(osp.join(folder, 'tokenizer.model')):
        shutil.copy(tokenizer_model, osp.join(folder, 'tokenizer.model'))
    return folder


PAPER_B = REPO / 'configs' / 'rsrefseg' / (
    'rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_8xb4-lora-200e_'
    'rrsisd-1024x1024.py')


def paper_tiny_config(path, spiece, arch=TINY_SIGLIP, tokenizer_cfg=None):
    """The paper config at tiny sizes (random weights, LoRA kept); ``arch``
    and ``tokenizer_cfg`` of the SigLIP backbone (SigLIP 2: a Gemma
    arch and ``tokenizer.model``)."""
    path.write_text(f"""
_base_ = [{str(PAPER_B)!r}]
model = dict(
    data_preprocessor=dict(size=(128, 128)),
    backbone=dict(arch=dict(_delete_=True, **{arch!r}),
                  checkpoint=None, tokenizer={spiece!r},
                  tokenizer_cfg={tokenizer_cfg!r}),
    neck=dict(in_channels=32, prompt_dims=32, dense_prompt_size=(32, 32)),
    decode_head=dict(sam_arch=dict(_delete_=True, **{TINY_SAM!r}),
                     checkpoint=None))
test_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadReferringImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=False),
    dict(type='LoadReferringAnnotations'),
    dict(type='PackReferringInputs')]))
""")
    return str(path)
