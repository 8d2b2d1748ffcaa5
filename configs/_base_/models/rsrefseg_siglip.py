# RSRefSeg as its authors built it (https://arxiv.org/abs/2501.06809):
# SigLIP so400m-patch14-384 (image + text) -> text-filter prompter -> SAM
# ViT-B. Weight files are local (see README "Weights"):
#   checkpoints/siglip-so400m-patch14-384/   Hugging Face folder of
#       google/siglip-so400m-patch14-384 (model.safetensors, spiece.model)
#   checkpoints/sam_vit_b_01ec64.pth         segment-anything ViT-B
# Children that change a checkpoint variable must also set the model key
# (config variables are resolved when this file is read).
siglip_checkpoint = 'checkpoints/siglip-so400m-patch14-384'
sam_checkpoint = 'checkpoints/sam_vit_b_01ec64.pth'
norm_cfg = dict(type='BN', requires_grad=True)
lora = dict(mode='lora', rank=16, alpha=16, drop_rate=0.1)
siglip_lora_targets = [
    'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj',
    'self_attn.out_proj'
]

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=None,  # SigLIP / SAM normalise inside the model
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
        arch='so400m-patch14-384',  # 384 px input -> 27x27 grid, width 1152
        checkpoint=siglip_checkpoint,  # spiece.model is read from the folder
        image_tuning=dict(**lora, targets=siglip_lora_targets),
        # the authors also adapt the text head (the sentence projection)
        text_tuning=dict(**lora, targets=siglip_lora_targets + ['head']),
        logit_trainable=False),  # filter scale / bias = SigLIP's own, frozen
    # TextFilterNeck() is the authors' prompter: 1x1 conv 3456 -> 256 + norm
    # + GELU, SAM's pretrained positional encoding, 2 stride-2 convs
    # (27 -> 14 -> 7: 49 sparse prompts), a linear 1x1 conv; the filters use
    # SigLIP's own scale and bias, frozen
    neck=dict(type='TextFilterNeck', in_channels=1152, norm_cfg=norm_cfg),
    decode_head=dict(
        type='SAMPromptHead',
        sam_arch='vit_b',
        checkpoint=sam_checkpoint,
        # the authors' targets; segment-anything names HF's neck.conv1 /
        # neck.conv2 'neck.0' / 'neck.2'
        encoder_tuning=dict(
            **lora,
            targets=[
                'attn.qkv', 'attn.proj', 'mlp.lin1', 'mlp.lin2', 'neck.0',
                'neck.2'
            ]),
        fast_attn=True,
        rel_pos_mode=None,
        with_cp=False,
        threshold=0.5,
        # 5 x sigmoid BCE on the logits resized to the label, no Dice
        loss_decode=dict(
            type='CrossEntropyLoss',
            use_sigmoid=True,
            avg_non_ignore=True,
            loss_weight=5.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
# SAM's point/box embeddings, IoU head and multimask tokens get no gradient.
find_unused_parameters = True
