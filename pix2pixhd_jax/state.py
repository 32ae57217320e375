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
    # Exponential moving average of g_params (optim.ema_decay > 0), else None (no arrays, so the
    # checkpoint layout of runs without EMA is unchanged). Used for samples, evaluation and export.
    g_ema: Any = None


def split_variables(variables: dict) -> tuple[Any, dict]:
    """Flax variables -> (params, the other collections)."""
    variables = dict(variables)
    params = variables.pop("params")
    return params, variables


def split_generator_variables(g_variables: dict) -> dict[str, dict]:
    """{'generator': vars, 'encoder': vars?} -> {'g_params': {...}, 'g_collections': {...}} as in GANState."""
    g_params, g_collections = {}, {}
    for name, variables in g_variables.items():
        g_params[name], g_collections[name] = split_variables(variables)
    return {"g_params": g_params, "g_collections": g_collections}


def create_state(g_variables: dict, d_variables: dict, tx_g, tx_d, *, ema: bool = False) -> GANState:
    """Assemble a fresh state from {'generator': vars, 'encoder': vars?} and D vars (+ G's EMA = G's params)."""
    g = split_generator_variables(g_variables)
    g_params, g_collections = g["g_params"], g["g_collections"]
    d_params, d_collections = split_variables(d_variables)
    return GANState(step=jnp.zeros((), jnp.int32), g_params=g_params, g_opt_state=tx_g.init(g_params),
                    g_collections=g_collections, d_params=d_params, d_opt_state=tx_d.init(d_params),
                    d_collections=d_collections, g_ema=jax.tree_util.tree_map(jnp.copy, g_params) if ema else None)


def ema_decay_at(step: jax.Array, decay: float, warmup: bool) -> jax.Array:
    """EMA decay at a 0-based step; with warmup min(decay, (1 + step) / (10 + step)), so early
    weights (far from the trained ones) stop dominating the average after a short run."""
    decay = jnp.float32(decay)
    if not warmup:
        return decay
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: Any, params: Any, decay: jax.Array) -> Any:
    """decay * ema + (1 - decay) * params, leaf by leaf."""
    return jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def inference_params(state: GANState) -> Any:
    """G (+E) params for samples, evaluation, inference and export: the EMA when the run keeps one."""
    return state.g_params if state.g_ema is None else state.g_ema
