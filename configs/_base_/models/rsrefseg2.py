# RSRefSeg 2 as its authors built it (KyanChen/RSRefSeg2,
# configs_RSRefSeg2/*_training.py): SigLIP 2 so400m-patch16-512 (image +
# text) -> cascaded prompter (decoupled text queries, 9 sparse prompts and a
# dense prompt) -> SAM 2.1 Hiera-L. Weight files are local (see README
# "Weights"):
#   checkpoints/siglip2-so400m-patch16-512/  Hugging Face folder of
#       google/siglip2-so400m-patch16-512 (model.safetensors, Gemma's
#       tokenizer.model)
#   checkpoints/sam2.1_hiera_large.pt        SAM 2.1 Hiera-L (sam2 release)
# Children that change a checkpoint variable must also set the model key
# (config variables are resolved when this file is read).
siglip2_checkpoint = 'checkpoints/siglip2-so400m-patch16-512'
sam2_checkpoint = 'checkpoints/sam2.1_hiera_large.pt'
# the authors' LoRA: rank 16, alpha 16, no dropout, on every tower
lora = dict(mode='lora', rank=16, alpha=16, drop_rate=0.0)
siglip_lora_targets = [
    'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj',
    'self_attn.out_proj'
]

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=None,  # SigLIP 2 / SAM 2 normalise inside the model
    std=None,
    bgr_to_rgb=True,
    size=(1024, 1024),
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='RSRefSeg',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='SigLIPBackbone',
        # 512 px input -> 32x32 grid, width 1152; Gemma's 256k vocabulary
        arch='siglip2-so400m-patch16-512',
        checkpoint=siglip2_checkpoint,  # tokenizer.model from the folder
        # the authors feed the expression as written (SigLIP 2's own
        # preprocessing lower-cases it)
        tokenizer_cfg=dict(lowercase=False),
        image_tuning=dict(**lora, targets=siglip_lora_targets),
        # the text head (the sentence projection) is adapted too
        text_tuning=dict(**lora, targets=siglip_lora_targets + ['head']),
        logit_trainable=False),  # dense-prompt scale / bias: SigLIP 2's
    # CascadedPrompter() is the authors' RRSIS-D prompter (also their
    # RefSegRS and RISBench one): 3 + 3 text queries from text pooling, 2
    # blocks per stage, 9 sparse prompts, a learnt 32x32 image positional
    # embedding, a dense prompt from the sentence feature against the
    # convolved refined image at 256x256, and two loss terms (query
    # separation and region-text, 0.5 each, neck.*); docs/rsrefseg2.md
    neck=dict(type='CascadedPrompter'),
    decode_head=dict(
        type='SAM2PromptHead',
        sam2_arch='large',
        checkpoint=sam2_checkpoint,
        # the authors' targets: Hiera trunk attn qkv / proj, FPN neck convs
        encoder_tuning=dict(
            **lora,
            targets=[
                r'trunk\.blocks\.\d+\.attn\.(qkv|proj)',
                r'neck\.convs\.\d+\.conv'
            ]),
        with_cp=False,
        threshold=0.5,
        # 5 x sigmoid BCE + 5 x Dice on the logits resized to the label
        loss_decode=[
            dict(
                type='CrossEntropyLoss',
                use_sigmoid=True,
                avg_non_ignore=True,
                loss_weight=5.0),
            dict(type='DiceLoss', use_sigmoid=True, loss_weight=5.0),
        ]),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
# SAM 2's multimask tokens, IoU and object-score heads get no gradient.
find_unused_parameters = True
