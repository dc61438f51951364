"""Sampling from a PerceiverAR with a fixed-size key/value cache, compiled once with jit.

generate(model, variables, prompt [b, p], max_new_tokens, rng=..., temperature=1.0,
         top_k=None, top_p=None, prompt_mask=None, return_logits=False)
  -> new tokens [b, max_new_tokens] (and their logits [b, max_new_tokens, vocab]).

The cache holds, for the last max_context positions, the cross-attention keys and values
(a ring buffer indexed by position % max_context) and the embeddings of the last num_latents
positions. Each new token costs one embedding, one key/value projection and the latent stack
(cross-attention over the cached context plus the self-attention layers): O(context), where
recomputing would project the whole context again. Past max_context the oldest position is
overwritten, so the window slides exactly as recomputing on the last max_context tokens does
(rotary attention depends only on relative positions). temperature=0 is greedy decoding;
top_k / top_p (nucleus) restrict sampling. Left-padded prompts pass prompt_mask (True = token);
positions are the model's (`perceiver_ar.token_positions`: each row's first token is 0), while
the ring buffer's slots follow the index in the window.
"""

import functools

import jax
import jax.numpy as jnp

from perceiver_jax.nn.perceiver_ar import PerceiverAR, token_positions


def sample_logits(logits, rng, temperature: float, top_k=None, top_p=None):
  """One token id per row of logits [b, vocab]: greedy at temperature 0, else sampled."""
  if temperature == 0:
    return jnp.argmax(logits, axis=-1)
  logits = logits.astype(jnp.float32) / temperature
  if top_k is not None:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p is not None:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    before = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1) - jax.nn.softmax(
        sorted_logits, axis=-1)
    sorted_logits = jnp.where(before > top_p, -jnp.inf, sorted_logits)  # Keeps the first.
    logits = jnp.full_like(logits, -jnp.inf).at[
        jnp.arange(logits.shape[0])[:, None], order].set(sorted_logits)
  return jax.random.categorical(rng, logits, axis=-1)


def generate(model: PerceiverAR, variables, prompt, max_new_tokens: int, *, rng=None,
             temperature: float = 1.0, top_k=None, top_p=None, prompt_mask=None,
             return_logits: bool = False):
  """New tokens after `prompt`; see the module docstring."""
  if prompt.ndim != 2 or prompt.shape[1] < 1:
    raise ValueError(f"generate: prompt must be ids [batch, length >= 1], got {prompt.shape}.")
  if max_new_tokens < 1:
    raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}.")
  if temperature < 0 or (top_k is not None and top_k < 1) or (
      top_p is not None and not 0 < top_p <= 1):
    raise ValueError("generate: temperature must be >= 0, top_k >= 1 and top_p in (0, 1]; got "
                     f"{temperature}, {top_k}, {top_p}.")
  if temperature > 0 and rng is None:
    raise ValueError("generate: sampling (temperature > 0) needs rng=jax.random.PRNGKey(...).")
  if model.absolute_positions and prompt.shape[1] + max_new_tokens > model.max_context:
    raise ValueError("generate: a PerceiverAR with absolute_positions cannot slide its window; "
                     f"prompt + new tokens must be <= max_context={model.max_context}.")
  if prompt_mask is None:
    prompt_mask = jnp.ones(prompt.shape, bool)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  fn = _compiled(model, max_new_tokens, float(temperature), top_k, top_p)
  tokens, logits = fn(variables, prompt, prompt_mask, rng)
  return (tokens, logits) if return_logits else tokens


@functools.lru_cache(maxsize=32)
def _compiled(model: PerceiverAR, max_new_tokens: int, temperature: float, top_k, top_p):
  context, num_latents = model.max_context, model.num_latents

  def run(variables, prompt, prompt_mask, rng):
    apply = functools.partial(model.apply, variables)
    batch = prompt.shape[0]
    window = min(prompt.shape[1], context)
    prompt, prompt_mask = prompt[:, -window:], prompt_mask[:, -window:]
    positions = token_positions(prompt_mask)  # As the model's: each row's first token is 0.
    x = apply(prompt, positions, method=PerceiverAR.embed)
    k, v = apply(x, positions, method=PerceiverAR.cross_keys_values)
    slots = jnp.arange(window) % context
    cache_k = jnp.zeros((batch, context) + k.shape[2:], k.dtype).at[:, slots].set(k)
    cache_v = jnp.zeros((batch, context) + v.shape[2:], v.dtype).at[:, slots].set(v)
    kv_positions = jnp.full((batch, context), -1, jnp.int32).at[:, slots].set(positions)
    kv_valid = jnp.zeros((batch, context), bool).at[:, slots].set(prompt_mask)
    pad = max(num_latents - window, 0)  # Invalid latents in front of a short prompt.
    latents = min(num_latents, window)
    lat_x = jnp.pad(x[:, -latents:], ((0, 0), (pad, 0), (0, 0)))
    lat_positions = jnp.pad(positions[:, -latents:], ((0, 0), (pad, 0)), constant_values=-1)
    lat_valid = jnp.pad(prompt_mask[:, -latents:], ((0, 0), (pad, 0)))
    state = (cache_k, cache_v, kv_positions, kv_valid, lat_x, lat_positions, lat_valid)

    def step(state, inputs):
      cache_k, cache_v, kv_positions, kv_valid, lat_x, lat_positions, lat_valid = state
      index, key = inputs
      logits = apply(lat_x, lat_positions, lat_valid, cache_k, cache_v, kv_positions, kv_valid,
                     method=PerceiverAR.latents_forward)[:, -1]
      token = sample_logits(logits, key, temperature, top_k, top_p).astype(prompt.dtype)
      position = positions[:, -1:] + 1 + index
      x_new = apply(token[:, None], position, method=PerceiverAR.embed)
      k_new, v_new = apply(x_new, position, method=PerceiverAR.cross_keys_values)
      slot = (window + index) % context
      state = (cache_k.at[:, slot].set(k_new[:, 0]), cache_v.at[:, slot].set(v_new[:, 0]),
               kv_positions.at[:, slot].set(position[:, 0]), kv_valid.at[:, slot].set(True),
               jnp.concatenate([lat_x[:, 1:], x_new], axis=1),
               jnp.concatenate([lat_positions[:, 1:], position], axis=1),
               jnp.concatenate([lat_valid[:, 1:], jnp.ones((batch, 1), bool)], axis=1))
      return state, (token, logits)

    keys = jax.random.split(rng, max_new_tokens)
    _, (tokens, logits) = jax.lax.scan(step, state, (jnp.arange(max_new_tokens), keys))
    return tokens.T, jnp.swapaxes(logits, 0, 1)

  return jax.jit(run)
