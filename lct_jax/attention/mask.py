"""The attention mask of a scene, stated by group ids (docs/design.md section 4).

A scene is a sequence of groups (0 = global prompt, 1..N = shots). Which
token slot belongs to which group is fixed by the config, so group ids are
static numpy arrays known at trace time; only key validity (text padding,
padded shots, padded frames) varies per example. Keeping the mask in this
factored form lets kernels skip whole tiles at trace time and never build a
dense `Sq x Sk` mask.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


def _as_group_ids(name: str, ids) -> np.ndarray:
  """Checks that `ids` is a static 1-D integer array; returns it as int32."""
  if isinstance(ids, jax.core.Tracer):
    raise ValueError(
        f"GroupMask.{name} must be a static numpy array (group ids are fixed "
        "by the config and drive trace-time tile skipping), got a traced "
        "value.")
  ids = np.asarray(ids)
  if ids.ndim != 1:
    raise ValueError(
        f"GroupMask.{name} must be 1-D (one group id per position), got "
        f"shape {ids.shape}.")
  if not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(
        f"GroupMask.{name} must hold integers, got dtype {ids.dtype}.")
  if ids.size and (ids.min() < np.iinfo(np.int32).min + 1 or
                   ids.max() > np.iinfo(np.int32).max - 1):
    # The extremes are reserved as sentinels for padded positions.
    raise ValueError(f"GroupMask.{name} values must fit in int32 minus the "
                     "two extremes.")
  ids = ids.astype(np.int32)
  ids.setflags(write=False)  # The mask is frozen; so are its arrays.
  return ids


# `model.attention_mask` -> causal: may a group attend to later groups' keys?
MODES = {"bidirectional": False, "context_causal": True}


# eq=False: generated __eq__/__hash__ would compare numpy arrays elementwise
# (ambiguous truth value / unhashable); identity semantics are what we want.
@dataclasses.dataclass(frozen=True, eq=False)
class GroupMask:
  """Who may attend whom, stated by group ids (no dense mask is built).

  q attends k  iff  kv_valid[b, k]  and  (not causal or kv_group[k] <= q_group[q]).

  Attributes:
    q_group: int32 [Sq], static numpy: the group id of each query position.
    kv_group: int32 [Sk], static numpy: the group id of each key position.
    kv_valid: bool [B, Sk], dynamic: key padding (False = never attended).
    causal: False for 'bidirectional', True for 'context_causal'.
  """
  q_group: np.ndarray
  kv_group: np.ndarray
  kv_valid: jax.Array
  causal: bool

  def __post_init__(self):
    # Frozen dataclass: normalise fields through object.__setattr__.
    object.__setattr__(self, "q_group", _as_group_ids("q_group", self.q_group))
    object.__setattr__(self, "kv_group",
                       _as_group_ids("kv_group", self.kv_group))
    kv_valid = jnp.asarray(self.kv_valid)
    if kv_valid.ndim != 2:
      raise ValueError(
          "GroupMask.kv_valid must have rank 2 [batch, Sk], got shape "
          f"{kv_valid.shape}.")
    if kv_valid.dtype != jnp.bool_:
      raise ValueError(
          "GroupMask.kv_valid must be boolean (True = attendable key), got "
          f"dtype {kv_valid.dtype}; use `.astype(bool)` if intended.")
    if kv_valid.shape[1] != self.kv_group.shape[0]:
      raise ValueError(
          f"GroupMask.kv_valid has {kv_valid.shape[1]} key positions but "
          f"kv_group has {self.kv_group.shape[0]}.")
    if not isinstance(self.causal, (bool, np.bool_)):
      raise ValueError(
          f"GroupMask.causal must be a bool, got {type(self.causal).__name__}.")
    object.__setattr__(self, "kv_valid", kv_valid)
    object.__setattr__(self, "causal", bool(self.causal))

  @classmethod
  def from_mode(cls, mode: str, q_group, kv_group, kv_valid) -> "GroupMask":
    """Builds a mask from a config mode (`MODES`)."""
    if mode not in MODES:
      raise ValueError(
          f"Unknown attention mask mode {mode!r}; expected one of "
          f"{sorted(MODES)}.")
    return cls(q_group, kv_group, kv_valid, MODES[mode])

  @property
  def batch_size(self) -> int:
    return self.kv_valid.shape[0]

  @property
  def q_len(self) -> int:
    return self.q_group.shape[0]

  @property
  def kv_len(self) -> int:
    return self.kv_group.shape[0]

  def validate(self, batch: int, q_len: int, kv_len: int) -> None:
    """Raises ValueError unless the mask fits q [B, Sq, ...], k [B, Sk, ...]."""
    for ok, problem in (
        (self.q_len == q_len, f"q_group has {self.q_len} positions but the "
         f"queries have Sq={q_len}."),
        (self.kv_len == kv_len, f"kv_group has {self.kv_len} positions but "
         f"the keys have Sk={kv_len}."),
        (self.batch_size == batch, f"kv_valid has batch {self.batch_size} "
         f"but the inputs have batch {batch}.")):
      if not ok:
        raise ValueError(f"GroupMask.{problem}")

  def dense(self) -> jax.Array:
    """bool [B, Sq, Sk]: the full mask, for the reference and tests only."""
    allowed_SqxSk = np.ones((self.q_len, self.kv_len), dtype=bool)
    if self.causal:
      allowed_SqxSk = self.kv_group[None, :] <= self.q_group[:, None]
    return self.kv_valid[:, None, :] & jnp.asarray(allowed_SqxSk)[None]

  # Pytree protocol: kv_valid is the only leaf, so a GroupMask can cross
  # jax.jit / lax.scan boundaries; group ids and causal are static aux data.
  def tree_flatten(self):
    aux = (_StaticIds(self.q_group), _StaticIds(self.kv_group), self.causal)
    return (self.kv_valid,), aux

  @classmethod
  def tree_unflatten(cls, aux, children):
    # Bypass __post_init__: leaves may be tracers, sentinels or None here.
    mask = object.__new__(cls)
    object.__setattr__(mask, "q_group", aux[0].ids)
    object.__setattr__(mask, "kv_group", aux[1].ids)
    object.__setattr__(mask, "kv_valid", children[0])
    object.__setattr__(mask, "causal", aux[2])
    return mask


class _StaticIds:
  """Hashable wrapper: numpy group ids as pytree aux data (a jit cache key)."""

  def __init__(self, ids: np.ndarray):
    self.ids = ids
    self._key = (ids.shape, ids.tobytes())

  def __eq__(self, other):
    return isinstance(other, _StaticIds) and self._key == other._key

  def __hash__(self):
    return hash(self._key)


jax.tree_util.register_pytree_node(
    GroupMask, GroupMask.tree_flatten, GroupMask.tree_unflatten)
