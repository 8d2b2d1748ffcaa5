# Tiny RSRefSeg 2 for the CPU: the tiny demo model (CLIP-like towers of width
# 64, a 2-layer SAM, random initialisation, synthetic scenes) with RSRefSeg
# 2's cascaded prompter in place of the text filters, and the authors' mask
# losses (BCE x5 + Dice x5). It exercises the RSRefSeg 2 neck, its loss terms
# and the FlexibleRunner variants (`*_fsdp.py`, `*_deepspeed-zero2-bf16.py`)
# in seconds per iteration on 2 CPU cores; the numbers say nothing about
# RRSIS-D.
_base_ = '../rsrefseg/rsrefseg-tiny_clip-tiny-sam-tiny_1xb16-adamw-1200it_synthetic-128x128.py'  # noqa: E501

model = dict(
    # CascadedPrompter at the demo's sizes: width 64 towers (8x8 grid, so an
    # 8x8 learnt image positional embedding), SAM prompt dim 64, a 64x64
    # mask input (4x SAM's 16x16 embedding); the authors' three stages, 9
    # sparse prompts, dense prompt and loss terms, as in their RRSIS-D config
    neck=dict(
        _delete_=True,
        type='CascadedPrompter',
        text_feat_dim=64,
        img_feat_dim=64,
        prompt_feat_dim=64,
        num_heads=2,
        internal_dim=32,
        mlp_dim=64,
        imgpe_config=dict(type='learnable', size=8),
        dense_prompt_size=(64, 64)),
    decode_head=dict(loss_decode=[
        dict(
            type='CrossEntropyLoss',
            use_sigmoid=True,
            avg_non_ignore=True,
            loss_weight=5.0),
        dict(type='DiceLoss', use_sigmoid=True, loss_weight=5.0),
    ]))
