# RSRefSeg (https://arxiv.org/abs/2501.06809): CLIP ViT-B/16 -> text-filter
# prompter -> SAM ViT-B. Weight files are local (see README "Weights"):
# checkpoints/ViT-B-16.pt (OpenAI CLIP) and checkpoints/sam_vit_b_01ec64.pth.
# Children that change a checkpoint variable must also set the model key
# (config variables are resolved when this file is read).
clip_checkpoint = 'checkpoints/ViT-B-16.pt'
sam_checkpoint = 'checkpoints/sam_vit_b_01ec64.pth'
# BN works on one CPU/GPU; distributed configs may use dict(type='SyncBN')
# (mmengine reverts SyncBN to BN when not distributed).
norm_cfg = dict(type='BN', requires_grad=True)
lora = dict(mode='lora', rank=16, alpha=16, drop_rate=0.1)

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=None,  # CLIP / SAM normalise inside the model
    std=None,
    bgr_to_rgb=True,
    size=(1024, 1024),
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='RSRefSeg',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='CLIPBackbone',
        arch='ViT-B/16',
        checkpoint=clip_checkpoint,
        image_tuning=dict(**lora, targets=['attn.qkv', 'attn.proj']),
        text_tuning=dict(**lora, targets=['attn.qkv', 'attn.proj'])),
    # TextFilterNeck() is the authors' prompter (SigLIP); the CLIP variant:
    neck=dict(
        type='TextFilterNeck',
        in_channels=512,  # CLIP ViT-B/16 joint embedding
        prompt_dims=256,  # SAM prompt dim
        dense_prompt_size=(256, 256),  # SAM mask input for a 1024 image
        down_spatial_times=2,
        use_local_filter=True,
        use_global_filter=True,
        use_dense_prompt=True,
        exclude_sot=True,  # CLIP's start token is the same for every text
        # CLIP has no logit bias: a learnable one, starting at -10
        filter_cfg=dict(type='learned', init_bias=-10.0),
        fuse_norm_act=False,  # plain 1x1 conv with bias
        final_proj=False,
        pos_embed='random',  # the neck's own random-Fourier encoding
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='SAMPromptHead',
        sam_arch='vit_b',
        checkpoint=sam_checkpoint,
        encoder_tuning=dict(**lora, targets=['qkv', 'proj', 'lin1', 'lin2']),
        fast_attn=True,
        # rel-pos bias in the fused attention: None = folded into q/k on GPU;
        # on CPU chunked mask slices for inference, folded into q/k for
        # training of >= 1024-token grids (full mask below)
        rel_pos_mode=None,
        with_cp=False,
        threshold=0.5,
        loss_decode=dict(
            type='CrossEntropyLoss',
            use_sigmoid=True,
            avg_non_ignore=True,
            loss_weight=5.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
# SAM's point/box embeddings, IoU head and multimask tokens get no gradient.
find_unused_parameters = True
