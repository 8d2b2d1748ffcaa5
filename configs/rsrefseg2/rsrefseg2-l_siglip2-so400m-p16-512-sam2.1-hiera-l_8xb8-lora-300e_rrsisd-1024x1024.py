# RSRefSeg 2 (Hiera-L), the authors' RRSIS-D model: SigLIP 2
# so400m-patch16-512 + the cascaded prompter + SAM 2.1 Hiera-L, LoRA (r16,
# a16, no dropout) on SigLIP 2's q/k/v/out projections (+ the text head) and
# on Hiera's attention qkv/proj and the FPN neck convs; prompter, prompt
# encoder and mask decoder fully trained. 8 images per GPU, AdamW 1e-4 wd
# 0.05, gradient clipping 3.0, bf16, 300 epochs (warm-up 5, cosine from
# epoch 30), BCE x5 + Dice x5 + the prompter's two terms, best checkpoint on
# val gIoU. The authors' runner (DeepSpeed ZeRO-2):
# `*_deepspeed-zero2-bf16.py`; FSDP: `*_fsdp.py`.
_base_ = [
    '../_base_/models/rsrefseg2.py', '../_base_/datasets/rrsisd.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_rsrefseg2_300e_adamw.py'
]
crop_size = (1024, 1024)

data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)
train_dataloader = dict(batch_size=8, num_workers=8)
# gIoU (and N-acc / T-acc where an expression has no target)
val_evaluator = dict(type='ReferringIoUMetric', generalized=True)
test_evaluator = val_evaluator
# lr 1e-4 is for 8 images per GPU; the authors' GPU count is not in their
# config (8 GPUs assumed, as for RSRefSeg): with another total batch keep
# lr or set auto_scale_lr.enable=True
auto_scale_lr = dict(enable=False, base_batch_size=64)
