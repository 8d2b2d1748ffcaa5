"""``TextFilterNeck``'s ``filter_cfg``: where the filters' scale and bias
come from."""

#: Filter parameter choices: where the filters' scale ``s`` and bias ``b``
#: come from (see :class:`TextFilterNeck`), with their defaults.
FILTER_TYPES = {
    'backbone': dict(init_bias=0.0),
    'learned': dict(init_bias=-10.0, gain=False),
    'calibrated': dict(init_bias=-10.0, std=2.0),
}


def check_filter_cfg(filter_cfg: dict) -> dict:
    """``filter_cfg`` with its type's defaults filled in.

    Raises:
        ValueError: Unknown type or keys.
    """
    cfg = dict(filter_cfg)
    kind = cfg.pop('type', None)
    if kind not in FILTER_TYPES:
        raise ValueError(f'filter_cfg type must be one of {list(FILTER_TYPES)}'
                         f', got {kind!r}')
    unknown = set(cfg) - set(FILTER_TYPES[kind])
    if unknown:
        raise ValueError(
            f'filter_cfg type {kind!r} takes '
            f'{sorted(FILTER_TYPES[kind])}, got {sorted(unknown)}')
    return dict(type=kind, **{**FILTER_TYPES[kind], **cfg})
