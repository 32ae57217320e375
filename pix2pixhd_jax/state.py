"""The GAN train state: one pytree with the step and, per side, params, optimizer state and
mutable collections. The optax transforms themselves live outside the state."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class GANState:
    step: jax.Array
    g_params: Any  # {'generator': ..., 'encoder': ...?}
    g_opt_state: Any
    g_collections: Any  # {'generator': {'batch_stats': ...}, ...}: BN stats / spectral-norm vectors
    d_params: Any
    d_opt_state: Any
    d_collections: Any


def split_variables(variables: dict) -> tuple[Any, dict]:
    """Flax variables -> (params, the other collections)."""
    variables = dict(variables)
    params = variables.pop("params")
    return params, variables


def create_state(g_variables: dict, d_variables: dict, tx_g, tx_d) -> GANState:
    """Assemble a fresh state from {'generator': vars, 'encoder': vars?} and D vars."""
    g_params, g_collections = {}, {}
    for name, variables in g_variables.items():
        g_params[name], g_collections[name] = split_variables(variables)
    d_params, d_collections = split_variables(d_variables)
    return GANState(step=jnp.zeros((), jnp.int32), g_params=g_params, g_opt_state=tx_g.init(g_params),
                    g_collections=g_collections, d_params=d_params, d_opt_state=tx_d.init(d_params),
                    d_collections=d_collections)
