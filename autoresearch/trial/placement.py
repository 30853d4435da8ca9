"""Where a trial's arrays live: a `jax.sharding.Mesh` with axes ('data', 'fsdp') over
its devices. Each batch is split across all devices; parameters and optimizer state
are replicated, or, with `fsdp`, sharded along the 'fsdp' axis (each array on its first
dimension that divides evenly; the rest replicated)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where a trial's arrays live: a mesh ('data', 'fsdp') over its devices."""
  mesh: Mesh

  @classmethod
  def over(cls, devices, fsdp: bool) -> 'Placement':
    devices = np.asarray(list(devices))
    shape = (1, devices.size) if fsdp else (devices.size, 1)
    return cls(Mesh(devices.reshape(shape), ('data', 'fsdp')))

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch(self) -> NamedSharding:
    """Leading (batch) dimension split over every device."""
    return NamedSharding(self.mesh, P(('data', 'fsdp')))

  @property
  def batches(self) -> NamedSharding:
    """A stack of batches (n, N, ...): each batch's rows split over every device."""
    return NamedSharding(self.mesh, P(None, ('data', 'fsdp')))

  def state(self, abstract_tree):
    """Shardings of a parameter or optimizer-state tree: replicated, or with `fsdp` each
    array split on its first dimension divisible by the number of devices."""
    n = self.mesh.shape['fsdp']

    def sharding(leaf):
      shape = getattr(leaf, 'shape', ())
      for axis, size in enumerate(shape):
        if n > 1 and size % n == 0:
          return NamedSharding(self.mesh, P(*([None] * axis), 'fsdp'))
      return self.replicated
    return jax.tree_util.tree_map(sharding, abstract_tree)

  def put(self, array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds whole (each process
    transfers only its own devices' part)."""
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])
