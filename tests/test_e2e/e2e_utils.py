"""Shared constants of the end-to-end tests."""
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = str(
    next((REPO / 'configs' / 'rsrefseg').glob('rsrefseg-tiny_*.py')))

# Small and fast overrides of the tiny demo config.
FAST = [
    'train_dataloader.batch_size=4',
    'train_dataloader.dataset.num_samples=64',
    'test_dataloader.dataset.num_samples=12',
    'val_dataloader.dataset.num_samples=12',
    'train_cfg.val_interval=1000',
    'default_hooks.logger.interval=1',
    'default_hooks.checkpoint.save_best=None',
    'randomness.deterministic=True',
]


