"""The GC options and the checks every GC optimizer and GC optim wrapper applies to its options.

Errors are one line that names the owner (``SGDGC``, ``SGDGC param group 1``,
``GCOptimWrapper``, ...), the option and the value. Where torch itself refuses an input with a
message of its own (``Invalid learning rate: -0.1``), torch's error is left as it is; these
checks cover what torch lets through or refuses only by accident (``lr='abc'``, ``lr=nan``,
``betas=0.9``), and the places where torch checks nothing (``add_param_group``,
``load_state_dict``).
"""
import difflib
import math
import numbers
import warnings
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import torch

#: The GC options, with their defaults. Each is a constructor argument of every GC optimizer
#: and GC optim wrapper, and a key that a param group may override.
GC_DEFAULTS: Dict[str, Any] = dict(use_gc=True, gc_conv_only=False, gc_loc='grad')
GC_LOCS = ('grad', 'update')

#: Numeric hyperparameters of torch's optimizers, and those torch requires to be >= 0.
NUMERIC_OPTIONS = ('lr', 'momentum', 'dampening', 'weight_decay', 'eps', 'lr_decay',
                   'initial_accumulator_value')
NON_NEGATIVE_OPTIONS = ('lr', 'momentum', 'weight_decay', 'eps', 'lr_decay',
                        'initial_accumulator_value')


def normalize_gc_options(owner: str, options: Mapping[str, Any],
                         gc_locs: Iterable[str] = GC_LOCS) -> Dict[str, Any]:
    """The GC options among ``options``, checked, with ``gc_loc=True/False`` (the authors'
    spelling) written as ``'grad'/'update'``. Raises ``ValueError`` naming the option."""
    gc_locs = tuple(gc_locs)
    checked = {key: options[key] for key in GC_DEFAULTS if key in options}
    for key in ('use_gc', 'gc_conv_only'):
        if key in checked and not isinstance(checked[key], bool):
            raise ValueError(f'{owner}: {key} must be True or False, got {checked[key]!r}')
    if 'gc_loc' in checked:
        loc = checked['gc_loc']
        if isinstance(loc, bool):
            loc = 'grad' if loc else 'update'
        if not isinstance(loc, str) or loc not in gc_locs:
            raise ValueError(f'{owner}: gc_loc must be one of {gc_locs}, got {checked["gc_loc"]!r}')
        checked['gc_loc'] = loc
    return checked


def _looks_like_gc_option(key: Any) -> bool:
    if not isinstance(key, str) or key in GC_DEFAULTS:
        return False
    if 'gc' in key.lower().split('_'):
        return True
    return bool(difflib.get_close_matches(key, list(GC_DEFAULTS), n=1, cutoff=0.75))


def refuse_misspelled_gc_options(owner: str, keys: Iterable[Any]) -> None:
    """A key that is not a GC option but looks like one (``use_cg``, ``gc_conv_onyl``,
    ``gc_location``) would be ignored without a word: refuse it."""
    for key in keys:
        if _looks_like_gc_option(key):
            guess = difflib.get_close_matches(key, list(GC_DEFAULTS), n=1, cutoff=0.5)
            hint = f"; did you mean '{guess[0]}'?" if guess else f'; GC options: {list(GC_DEFAULTS)}'
            raise ValueError(f'{owner}: unknown option {key!r}{hint}')


def _is_number(value: Any) -> bool:
    return isinstance(value, (numbers.Real, torch.Tensor))


def _finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_meta or value.is_complex():
            return True  # left to torch
        return bool(torch.isfinite(value.detach()).all())
    return math.isfinite(value)


def check_option_types(owner: str, values: Mapping[str, Any]) -> None:
    """Before torch sees them: a numeric hyperparameter that is neither a number nor a tensor
    (``lr='abc'``, ``lr=[0.1]``, ``lr=None``) and ``betas`` that are not a pair of them make
    torch fail with errors that do not name the option. Raises ``TypeError`` / ``ValueError``."""
    for name in NUMERIC_OPTIONS:
        if name in values and not _is_number(values[name]):
            raise TypeError(f'{owner}: {name} must be a number or a 1-element tensor, '
                            f'got {values[name]!r}')
    if 'betas' in values:
        betas = values['betas']
        if not isinstance(betas, Sequence) or isinstance(betas, str):
            raise TypeError(f'{owner}: betas must be a pair (beta1, beta2), got {betas!r}')
        if len(betas) != 2:
            raise ValueError(f'{owner}: betas must be a pair (beta1, beta2), got {len(betas)} '
                             f'values: {betas!r}')
        if not all(_is_number(beta) for beta in betas):
            raise TypeError(f'{owner}: betas must be a pair of numbers, got {betas!r}')


def check_hyperparameters(owner: str, values: Mapping[str, Any]) -> None:
    """The rules torch's constructors apply, for the places where torch applies none (a param
    group), plus finiteness: ``nan`` or ``inf`` is meaningless for every hyperparameter."""
    check_option_types(owner, values)
    for name in NUMERIC_OPTIONS:
        value = values.get(name)
        if value is None:
            continue
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            raise ValueError(f'{owner}: {name} must be a number or a 1-element tensor, '
                             f'got a tensor of {value.numel()} values')
        if not _finite(value):
            raise ValueError(f'{owner}: {name} must be finite, got {value!r}')
        if name in NON_NEGATIVE_OPTIONS and not value >= 0:
            raise ValueError(f'{owner}: {name} must be >= 0, got {value!r}')
    betas = values.get('betas')
    if betas is not None:
        for i, beta in enumerate(betas):
            if not (_finite(beta) and 0.0 <= beta < 1.0):
                raise ValueError(f'{owner}: betas[{i}] must be in [0, 1), got betas={betas!r}')
    if values.get('nesterov') and not (values.get('momentum', 0) > 0
                                       and values.get('dampening', 0) == 0):
        raise ValueError(f'{owner}: nesterov=True needs momentum > 0 and dampening == 0, got '
                         f'momentum={values.get("momentum")!r}, '
                         f'dampening={values.get("dampening")!r}')


def adopt_loaded_gc_options(owner: str, loaded: List[dict], configured: Optional[List[dict]],
                            defaults: Mapping[str, Any],
                            gc_locs: Iterable[str] = GC_LOCS) -> None:
    """GC options of param groups that come from a state dict (``load_state_dict``, resume).

    As for ``lr``, a group's own GC options in the state dict win over the configured ones
    (``configured``: the groups before the load, matched by position, as torch matches them);
    where they differ, one warning says so. A group without GC options (a torch optimizer's
    state dict) takes the configured group's, else ``defaults`` (the GC options' defaults
    only). Every value is checked.
    """
    differences = []
    for index, group in enumerate(loaded):
        where = f'{owner} param group {index}'
        refuse_misspelled_gc_options(where, group)
        group.update(normalize_gc_options(where, group, gc_locs))
        before = configured[index] if configured is not None and index < len(configured) else {}
        for key, default in defaults.items():
            wanted = before.get(key, default)
            if key not in group:
                group[key] = wanted
            elif group[key] != wanted and configured is not None:
                differences.append(f'group {index}: {key}={group[key]!r} (configured {wanted!r})')
    if differences:
        warnings.warn(f'{owner}: the loaded state dict sets other GC options than configured, '
                      f'and they are used (as its lr is): {"; ".join(differences)}',
                      stacklevel=3)
