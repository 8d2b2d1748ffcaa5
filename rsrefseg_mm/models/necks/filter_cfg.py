"""``TextFilterNeck``'s ``filter_cfg``: where the filters' scale and bias
come from, and the arguments of earlier versions it replaces."""
import logging

from mmengine.logging import print_log

#: Filter parameter choices: where the filters' scale ``s`` and bias ``b``
#: come from (see :class:`TextFilterNeck`), with their defaults.
FILTER_TYPES = {
    'backbone': dict(init_bias=0.0),
    'learned': dict(init_bias=-10.0, gain=False),
    'calibrated': dict(init_bias=-10.0, std=2.0),
}
#: Arguments of earlier versions that ``filter_cfg`` replaces.
LEGACY_FILTER_KEYS = ('init_bias', 'learnable_bias', 'learnable_scale',
                      'filter_calibration')


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


def filter_cfg_from_legacy(legacy: dict, given: dict) -> dict:
    """The ``filter_cfg`` of the arguments earlier versions took
    (``init_bias``, ``learnable_bias``, ``learnable_scale``,
    ``filter_calibration``; their defaults were -10, True, False, None);
    logged as a warning that names the replacement.

    Args:
        legacy (dict): The earlier arguments.
        given (dict): The ``filter_cfg`` given next to them (replaced).

    Returns:
        dict: The ``filter_cfg`` they stand for.

    Raises:
        TypeError: Other unknown arguments.
        ValueError: A combination that earlier versions refused.
    """
    unknown = set(legacy) - set(LEGACY_FILTER_KEYS)
    if unknown:
        raise TypeError(f'TextFilterNeck got unexpected arguments '
                        f'{sorted(unknown)}')
    bias = float(legacy.get('init_bias', -10.0))
    learn_bias = legacy.get('learnable_bias', True)
    gain = legacy.get('learnable_scale', False)
    calibration = legacy.get('filter_calibration')
    if calibration is not None:
        if not (gain and learn_bias) or set(calibration) - {'std'}:
            raise ValueError(
                'filter_calibration=dict(std=...) needs learnable_scale=True '
                'and learnable_bias=True; use filter_cfg=dict('
                "type='calibrated', std=..., init_bias=...)")
        cfg = dict(
            type='calibrated', init_bias=bias, std=calibration.get('std', 2.0))
    elif learn_bias:
        cfg = dict(type='learned', init_bias=bias, gain=bool(gain))
    elif gain:
        raise ValueError('learnable_scale=True with a frozen bias has no '
                         "filter_cfg equivalent; use type='learned'")
    else:
        cfg = dict(type='backbone', init_bias=bias)
    print_log(
        f'TextFilterNeck: {sorted(legacy)} are replaced by filter_cfg; '
        f'read as filter_cfg={cfg} (in place of filter_cfg={dict(given)})',
        logger='current',
        level=logging.WARNING)
    return cfg
