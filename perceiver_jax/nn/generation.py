"""Sampling from a PerceiverAR with fixed-size key/value caches, compiled once with jit.

generate(model, variables, prompt [b, p], max_new_tokens, rng=..., temperature=1.0,
         top_k=None, top_p=None, prompt_mask=None, return_logits=False, cache='sliding',
         max_latents=None, eos_id=None)
  -> new tokens [b, max_new_tokens] (and their logits [b, max_new_tokens, vocab]).

Both caches hold, for the last max_context positions, the cross-attention keys and values (a
ring buffer indexed by position % max_context) and the embeddings of the last num_latents
positions. Past max_context the oldest position is overwritten, so the window slides.

cache='sliding' (exact): each new token costs one embedding, one key/value projection and the
whole latent stack over the last num_latents positions: its logits equal recomputing the model
on the last max_context tokens (rotary attention depends only on relative positions).

cache='latents' (the official Perceiver AR's fast decoding): the self-attention keys and values
of the latents are cached too, per layer, for up to `max_latents` latents (default
min(2 * num_latents, max_context)). A new token joins as a new latent: its query cross-attends
to the cached positions <= its own, then in each layer attends to the cached latents and
itself: O(context + layers * max_latents) per token instead of a full latent stack. When
max_latents latents are cached, the cache is rebuilt ("reset-fill") by one latent-stack pass
over the last num_latents positions. Its logits equal a full forward whose latents are all
positions since the last reset-fill (tested), not the sliding mode's last num_latents; each
latent cross-attends to the positions <= its own among the last max_context of the sequence
when it joined (its cached keys and values stay as the window slides on; within max_context
that is PerceiverAR.latents_forward over the sequence).

temperature=0 is greedy decoding; top_k / top_p (nucleus) restrict sampling. Prompts of
different lengths are left-padded (`pad_prompts`) and pass prompt_mask (True = token); each row
gets the positions of its prompt alone (its first token is position 0), so it generates what
that prompt alone would. With eos_id, a row that has produced eos_id yields PAD (0) after it
(`sequence_lengths` gives each row's length) and the loop (a while_loop) stops once every row
has ended; logits after a row's end are 0. `compile_generate` compiles a call ahead of time
(to time generation apart from compilation).
"""

import functools
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.nn.perceiver_ar import PerceiverAR, token_positions

CACHES = ("sliding", "latents")
PAD_ID = 0


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


def pad_prompts(prompts: Sequence[Sequence[int]]):
  """Left-pads token lists with PAD (0) -> (ids [b, longest] int32, prompt_mask [b, longest])."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("pad_prompts needs at least one prompt and no empty prompt; got lengths "
                     f"{[len(p) for p in prompts]}.")
  longest = max(len(p) for p in prompts)
  ids = np.full((len(prompts), longest), PAD_ID, np.int32)
  mask = np.zeros((len(prompts), longest), bool)
  for row, prompt in enumerate(prompts):
    ids[row, longest - len(prompt):] = prompt
    mask[row, longest - len(prompt):] = True
  return jnp.asarray(ids), jnp.asarray(mask)


def sequence_lengths(tokens, eos_id: int):
  """Generated tokens [b, n] -> each row's length [b]: up to and including its first eos_id,
  else n."""
  tokens = np.asarray(tokens)
  ended = tokens == eos_id
  return np.where(ended.any(-1), ended.argmax(-1) + 1, tokens.shape[1])


def generate(model: PerceiverAR, variables, prompt, max_new_tokens: int, *, rng=None,
             temperature: float = 1.0, top_k=None, top_p=None, prompt_mask=None,
             return_logits: bool = False, cache: str = "sliding",
             max_latents: Optional[int] = None, eos_id: Optional[int] = None):
  """New tokens after `prompt`; see the module docstring."""
  fn, args = _prepare(model, variables, prompt, max_new_tokens, rng, temperature, top_k, top_p,
                      prompt_mask, cache, max_latents, eos_id)
  tokens, logits = fn(*args)
  return (tokens, logits) if return_logits else tokens


def compile_generate(model: PerceiverAR, variables, prompt, max_new_tokens: int, *,
                     return_logits: bool = False, **kwargs):
  """Compiles generate(model, variables, prompt, max_new_tokens, **kwargs) ahead of time (the
  same keyword arguments) -> (run, compile_seconds): run() returns what that call returns,
  with no tracing or compiling (to time generation apart from compilation)."""
  fn, args = _prepare(model, variables, prompt, max_new_tokens, **kwargs)
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  seconds = time.perf_counter() - start

  def run():
    tokens, logits = compiled(*args)
    return (tokens, logits) if return_logits else tokens

  return run, seconds


def _prepare(model, variables, prompt, max_new_tokens, rng=None, temperature=1.0, top_k=None,
             top_p=None, prompt_mask=None, cache="sliding", max_latents=None, eos_id=None):
  """Checks generate's arguments -> (the jitted generation, its arguments)."""
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
  if cache not in CACHES:
    raise ValueError(f"generate: cache must be one of {CACHES}, got {cache!r}.")
  if cache == "latents":
    if max_latents is None:
      max_latents = min(2 * model.num_latents, model.max_context)
    if not model.num_latents <= max_latents <= model.max_context:
      raise ValueError(f"generate: max_latents={max_latents} must be in [num_latents, "
                       f"max_context] = [{model.num_latents}, {model.max_context}].")
    if model.latent_kv_query_norm:
      raise ValueError("generate: cache='latents' does not support PerceiverAR."
                       "latent_kv_query_norm=True (a converted krasserm model): the earlier "
                       "latents' keys would need their query norm; use cache='sliding'.")
  elif max_latents is not None:
    raise ValueError(f"generate: max_latents={max_latents} bounds cache='latents' only; drop it "
                     "or pass cache='latents'.")
  if eos_id is not None and not 0 <= eos_id < model.vocab_size:
    raise ValueError(f"generate: eos_id={eos_id} must be a token id in [0, vocab_size="
                     f"{model.vocab_size}) or None.")
  if prompt_mask is None:
    prompt_mask = jnp.ones(prompt.shape, bool)
  mask = np.asarray(prompt_mask)
  if mask.shape != prompt.shape or not mask[:, -1].all() or (np.diff(mask.astype(int)) < 0).any():
    raise ValueError(f"generate: prompt_mask {mask.shape} must have the prompt's shape "
                     f"{prompt.shape} and be left padding (False then True, the last True) in "
                     "every row; pad_prompts builds both.")
  if model.absolute_positions and mask.sum(-1).max() + max_new_tokens > model.max_context:
    raise ValueError("generate: a PerceiverAR with absolute_positions cannot slide its window; "
                     "each prompt's tokens + new tokens must be <= max_context="
                     f"{model.max_context}.")
  rng = jax.random.PRNGKey(0) if rng is None else rng
  fn = _compiled(model.clone(remat=False), max_new_tokens, float(temperature), top_k, top_p,
                 cache, max_latents, eos_id)
  return fn, (variables, prompt, prompt_mask, rng)


@functools.lru_cache(maxsize=32)
def _compiled(model: PerceiverAR, max_new_tokens: int, temperature: float, top_k, top_p,
              cache: str, max_latents: Optional[int], eos_id: Optional[int]):
  context, num_latents = model.max_context, model.num_latents

  def run(variables, prompt, prompt_mask, rng):
    apply = functools.partial(model.apply, variables)
    batch = prompt.shape[0]
    window = min(prompt.shape[1], context)
    prompt, prompt_mask = prompt[:, -window:], prompt_mask[:, -window:]
    # Each row's positions are those of its prompt alone: left padding shifts them.
    positions = token_positions(prompt_mask)  # The model's: each row's first token is 0.
    x = apply(prompt, positions, method=PerceiverAR.embed)
    k, v = apply(x, positions, method=PerceiverAR.cross_keys_values)
    slots = jnp.arange(window) % context
    ring = (jnp.zeros((batch, context) + k.shape[2:], k.dtype).at[:, slots].set(k),
            jnp.zeros((batch, context) + v.shape[2:], v.dtype).at[:, slots].set(v),
            jnp.full((batch, context), -1, jnp.int32).at[:, slots].set(positions),
            jnp.zeros((batch, context), bool).at[:, slots].set(prompt_mask))
    pad = max(num_latents - window, 0)  # Invalid latents in front of a short prompt.
    latents = min(num_latents, window)
    last = (jnp.pad(x[:, -latents:], ((0, 0), (pad, 0), (0, 0))),
            jnp.pad(positions[:, -latents:], ((0, 0), (pad, 0)), constant_values=-1),
            jnp.pad(prompt_mask[:, -latents:], ((0, 0), (pad, 0))))

    def append(state, token, index):
      """Writes token [b] (the index-th new one) into the ring and the last latents."""
      ring, last = state[:2]
      position = positions[:, -1:] + 1 + index
      x_new = apply(token[:, None], position, method=PerceiverAR.embed)
      k_new, v_new = apply(x_new, position, method=PerceiverAR.cross_keys_values)
      slot = (window + index) % context
      ring = (ring[0].at[:, slot].set(k_new[:, 0]), ring[1].at[:, slot].set(v_new[:, 0]),
              ring[2].at[:, slot].set(position[:, 0]), ring[3].at[:, slot].set(True))
      shift = lambda a, new: jnp.concatenate([a[:, 1:], new], axis=1)
      last = (shift(last[0], x_new), shift(last[1], position),
              shift(last[2], jnp.ones((batch, 1), bool)))
      return ring, last, x_new, position

    def full_stack(ring, last):
      return apply(*last, *ring, method=PerceiverAR.latents_forward)[:, -1]

    def fill(ring, last):
      """Latent cache rebuilt from the last num_latents positions -> (logits, latent cache)."""
      empty = [(jnp.zeros((batch, num_latents) + k.shape[2:], k.dtype),) * 2] * model.num_layers
      logits, layers = apply(last[0], last[1], *ring, empty, last[1], last[2], 0,
                             method=PerceiverAR.latents_extend)
      grow = lambda a, value=0: jnp.pad(a, ((0, 0), (0, max_latents - num_latents))
                                        + ((0, 0),) * (a.ndim - 2), constant_values=value)
      layers = [(grow(keys), grow(values)) for keys, values in layers]
      return logits[:, -1], (layers, grow(last[1], -1), grow(last[2], False),
                             jnp.int32(num_latents))

    def extend(ring, latent_cache, x_new, position):
      """The new token joins the cached latents -> (logits, latent cache)."""
      layers, cache_positions, cache_valid, count = latent_cache
      cache_positions = cache_positions.at[:, count].set(position[:, 0])
      cache_valid = cache_valid.at[:, count].set(True)
      logits, layers = apply(x_new, position, *ring, layers, cache_positions, cache_valid, count,
                             method=PerceiverAR.latents_extend)
      return logits[:, -1], (layers, cache_positions, cache_valid, count + 1)

    if cache == "sliding":
      logits, state = full_stack(ring, last), (ring, last)
    else:
      logits, latent_cache = fill(ring, last)
      state = (ring, last, latent_cache)

    def advance(state, token, index):
      """Appends the index-th new token -> (logits predicting the next one, state)."""
      ring, last, x_new, position = append(state, token, index)
      if cache == "sliding":
        return full_stack(ring, last), (ring, last)
      latent_cache = state[2]
      logits, latent_cache = jax.lax.cond(
          latent_cache[3] == max_latents, lambda: fill(ring, last),
          lambda: extend(ring, latent_cache, x_new, position))
      return logits, (ring, last, latent_cache)

    keys = jax.random.split(rng, max_new_tokens)

    def emit(index, logits, done, tokens, all_logits):
      """Samples the index-th token; PAD and zero logits for rows that have ended."""
      token = sample_logits(logits, keys[index], temperature, top_k, top_p).astype(prompt.dtype)
      token = jnp.where(done, PAD_ID, token)
      logits = jnp.where(done[:, None], 0, logits)
      tokens = tokens.at[:, index].set(token)
      all_logits = all_logits.at[:, index].set(logits)
      if eos_id is not None:
        done = done | (token == eos_id)
      return token, done, tokens, all_logits

    tokens = jnp.full((batch, max_new_tokens), PAD_ID, prompt.dtype)
    all_logits = jnp.zeros((batch, max_new_tokens, logits.shape[-1]), logits.dtype)
    token, done, tokens, all_logits = emit(0, logits, jnp.zeros((batch,), bool), tokens,
                                           all_logits)

    def body(carry):
      index, state, token, done, tokens, all_logits = carry
      logits, state = advance(state, token, index - 1)
      return (index + 1, state) + emit(index, logits, done, tokens, all_logits)

    def more(carry):
      return (carry[0] < max_new_tokens) & ~jnp.all(carry[3])

    carry = jax.lax.while_loop(more, body, (jnp.int32(1), state, token, done, tokens, all_logits))
    return carry[4], carry[5]

  return jax.jit(run)
